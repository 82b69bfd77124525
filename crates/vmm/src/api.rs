//! The channel between the control-API server (in the oxvmm binary) and the VMM's event loop.
//!
//! The server parses HTTP into an [`ApiRequest`] and calls [`ApiSender::call`], which wakes the
//! event loop through an eventfd and blocks until the VMM answers.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use vmm_api::routes::ApiRequest;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// What the VMM answers: a JSON body (or none), or an error with its HTTP status.
pub type ApiReply = Result<Option<serde_json::Value>, vmm_api::routes::ApiError>;

/// One request on its way to the VMM, with the way back.
pub struct ApiEnvelope {
    /// The request.
    pub request: ApiRequest,
    /// Where the reply goes.
    pub reply: Sender<ApiReply>,
}

/// The server's end.
#[derive(Clone)]
pub struct ApiSender {
    tx: Sender<ApiEnvelope>,
    wake: Arc<EventFd>,
}

/// The VMM's end.
pub struct ApiReceiver {
    rx: Receiver<ApiEnvelope>,
    wake: Arc<EventFd>,
}

/// A connected pair.
pub fn api_channel() -> std::io::Result<(ApiSender, ApiReceiver)> {
    let (tx, rx) = mpsc::channel();
    let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    Ok((
        ApiSender {
            tx,
            wake: wake.clone(),
        },
        ApiReceiver { rx, wake },
    ))
}

impl ApiSender {
    /// Sends `request` to the VMM and waits for its reply.
    pub fn call(&self, request: ApiRequest) -> ApiReply {
        let gone = || {
            Err(vmm_api::routes::ApiError {
                status: 503,
                message: "the VM has stopped".to_string(),
            })
        };
        let (reply, answer) = mpsc::channel();
        if self.tx.send(ApiEnvelope { request, reply }).is_err() {
            return gone();
        }
        if let Err(e) = self.wake.write(1) {
            tracing::error!("cannot wake the VMM for an API request: {e}");
        }
        answer.recv().unwrap_or_else(|_| gone())
    }
}

impl ApiReceiver {
    /// The eventfd that becomes readable when requests wait.
    pub fn eventfd(&self) -> &EventFd {
        &self.wake
    }

    /// Takes every waiting request.
    pub fn drain(&self) -> Vec<ApiEnvelope> {
        let _ = self.wake.read();
        self.rx.try_iter().collect()
    }
}
