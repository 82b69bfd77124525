//! Answers control-API requests against the running machine.

use serde::Serialize;
use vmm_api::routes::{ApiError, ApiRequest};
use vmm_api::types::{PingResponse, VmInfo, VmState};

use crate::api::ApiReply;
use crate::events::StopReason;
use crate::vm::{Boot, Machine};

fn json(value: impl Serialize) -> ApiReply {
    serde_json::to_value(value).map(Some).map_err(|e| ApiError {
        status: 500,
        message: format!("cannot encode the response: {e}"),
    })
}

fn conflict(message: &str) -> ApiReply {
    Err(ApiError {
        status: 409,
        message: message.to_string(),
    })
}

impl Machine {
    /// Handles one request; the VM keeps running whatever the outcome.
    pub(crate) fn handle_api(&mut self, boot: &Boot, request: ApiRequest) -> ApiReply {
        let paused = boot.threads.is_paused();
        match request {
            ApiRequest::Ping => json(PingResponse::current()),
            ApiRequest::Info => json(VmInfo {
                state: if paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
                config: self.config.clone(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                boots: self.boots,
            }),
            ApiRequest::Pause if paused => conflict("the VM is already paused"),
            ApiRequest::Pause => {
                boot.threads.pause();
                Ok(None)
            }
            ApiRequest::Resume if !paused => conflict("the VM is not paused"),
            ApiRequest::Resume => {
                boot.threads.resume();
                Ok(None)
            }
            ApiRequest::Shutdown if paused => {
                conflict("the VM is paused: resume it first, so the guest can see the power button")
            }
            ApiRequest::Shutdown => {
                self.devices.press_power_button();
                Ok(None)
            }
            ApiRequest::Reboot => {
                self.latch.request(StopReason::Restart(
                    "reboot requested through the control API".to_string(),
                ));
                Ok(None)
            }
            ApiRequest::PowerOff => {
                self.latch.request(StopReason::PowerOff);
                Ok(None)
            }
            ApiRequest::Counters => json(self.counters.snapshot()),
            ApiRequest::Balloon(_) => Err(ApiError {
                status: 400,
                message: "not supported: this VM has no balloon device (virtio-balloon is not \
                          implemented yet)"
                    .to_string(),
            }),
            ApiRequest::Snapshot(request) => self.snapshot(boot, &request),
        }
    }
}
