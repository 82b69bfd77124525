//! The control API's request path: HTTP/1.1 framing, then routing and the JSON bodies of every
//! route (VmConfig, balloon, snapshot).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_api::http::{HttpLimits, read_request};

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::new(data);
    let limits = HttpLimits::default();
    while let Ok(Some(request)) = read_request(&mut reader, &limits) {
        let _ = vmm_api::parse_request(&request.method, &request.target, &request.body);
    }
    let _ = serde_json::from_slice::<vmm_api::VmConfig>(data);
});
