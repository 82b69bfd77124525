//! The server side of one connection: read requests, route them, let the VMM act, answer.
//!
//! oxvmm's API thread accepts connections on its Unix socket and calls [`serve_connection`] for
//! each; what a request does to the VM is the `handle` closure's business, so this module knows
//! nothing of VMs and is tested without one.

use std::io::{BufRead, Write};

use crate::http::{HttpError, HttpLimits, read_request, write_response_with_headers};
use crate::routes::{ApiError, ApiRequest, ApiResponse, find_route, parse_request};

/// Serves requests from `reader`, answering on `writer`, until the client closes the connection,
/// asks for `Connection: close`, or sends something unreadable.
///
/// Each request is decoded with [`parse_request`]; valid ones go to `handle`, whose answer (or
/// error) is written back. Routing errors (404, 405 with an `Allow` header, 400) are answered
/// without calling `handle`. A malformed HTTP message is answered with its status and
/// `Connection: close` (the framing is lost, so the connection cannot go on) and returned as the
/// error; so is a failed read or write (without an answer).
pub fn serve_connection<R, W, H>(
    reader: &mut R,
    writer: &mut W,
    limits: &HttpLimits,
    mut handle: H,
) -> Result<(), HttpError>
where
    R: BufRead,
    W: Write,
    H: FnMut(ApiRequest) -> Result<ApiResponse, ApiError>,
{
    loop {
        let request = match read_request(reader, limits) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(HttpError::Io(e)) => return Err(HttpError::Io(e)),
            Err(e) => {
                let error = ApiError::new(e.status(), e.to_string());
                // The connection is being dropped anyway; a failed answer changes nothing.
                let _ = write_outcome(writer, "", Err(error), false);
                return Err(e);
            }
        };
        let keep_alive = request.keep_alive();
        let outcome =
            parse_request(&request.method, &request.target, &request.body).and_then(&mut handle);
        write_outcome(writer, request.path(), outcome, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Writes an answer or an error as HTTP; a 405 names the allowed method in `Allow`.
fn write_outcome(
    writer: &mut impl Write,
    path: &str,
    outcome: Result<ApiResponse, ApiError>,
    keep_alive: bool,
) -> Result<(), HttpError> {
    let (status, body) = match outcome {
        Ok(response) => (response.status(), response.body()),
        Err(error) => (error.status, Some(error.body())),
    };
    let mut headers = Vec::with_capacity(2);
    if status == 405
        && let Some(route) = find_route(path)
    {
        headers.push(("Allow", route.method));
    }
    if !keep_alive {
        headers.push(("Connection", "close"));
    }
    write_response_with_headers(writer, status, &headers, body.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::http::{HttpResponse, read_response};
    use crate::types::{ErrorBody, PingResponse};

    fn handler(request: ApiRequest) -> Result<ApiResponse, ApiError> {
        match request {
            ApiRequest::Ping => ApiResponse::json(&PingResponse::current()),
            ApiRequest::Resume => Err(ApiError::conflict("the VM is running, not paused")),
            _ => Ok(ApiResponse::NoContent),
        }
    }

    fn serve(input: &[u8]) -> (Result<(), HttpError>, Vec<HttpResponse>) {
        let mut output = Vec::new();
        let result = serve_connection(
            &mut Cursor::new(input),
            &mut output,
            &HttpLimits::SERVER,
            handler,
        );
        let mut reader = Cursor::new(output);
        let mut responses = Vec::new();
        while usize::try_from(reader.position()).unwrap() < reader.get_ref().len() {
            responses.push(read_response(&mut reader, &HttpLimits::CLIENT).unwrap());
        }
        (result, responses)
    }

    fn error_message(response: &HttpResponse) -> String {
        serde_json::from_slice::<ErrorBody>(&response.body)
            .unwrap()
            .error
    }

    #[test]
    fn answers_pipelined_requests_in_order() {
        let input = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n\
                      PUT /api/v1/vm.pause HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
                      PUT /api/v1/vm.resume HTTP/1.1\r\n\r\n\
                      GET /nowhere HTTP/1.1\r\n\r\n";

        let (result, responses) = serve(input);

        assert!(result.is_ok());
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 204, 409, 404]);
        let ping: PingResponse = serde_json::from_slice(&responses[0].body).unwrap();
        assert_eq!(ping, PingResponse::current());
        assert!(error_message(&responses[2]).contains("not paused"));
        assert!(error_message(&responses[3]).contains("/nowhere"));
    }

    #[test]
    fn connection_close_ends_the_connection() {
        let input = b"PUT /api/v1/vm.pause HTTP/1.1\r\nConnection: close\r\n\r\n\
                      PUT /api/v1/vm.pause HTTP/1.1\r\n\r\n";

        let (result, responses) = serve(input);

        assert!(result.is_ok());
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].header("connection"), Some("close"));
    }

    #[test]
    fn wrong_method_gets_405_with_allow() {
        let (_, responses) = serve(b"GET /api/v1/vm.pause?x HTTP/1.1\r\n\r\n");

        assert_eq!(responses[0].status, 405);
        assert_eq!(responses[0].header("allow"), Some("PUT"));
        assert!(error_message(&responses[0]).contains("use PUT"));
    }

    #[test]
    fn bad_body_is_400_and_the_connection_goes_on() {
        let input =
            b"PUT /api/v1/vm.balloon HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"target_mb\":1}\
                      GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n";

        let (result, responses) = serve(input);

        assert!(result.is_ok());
        assert_eq!(responses[0].status, 400);
        assert!(error_message(&responses[0]).contains("target_mb"));
        assert_eq!(responses[1].status, 200);
    }

    #[test]
    fn malformed_http_is_answered_then_the_connection_closes() {
        let input = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n\
                      PUT /api/v1/vm.balloon HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                      GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n";

        let (result, responses) = serve(input);

        assert!(matches!(
            result,
            Err(HttpError::TransferEncodingUnsupported { .. })
        ));
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 501]);
        assert_eq!(responses[1].header("connection"), Some("close"));
        assert!(error_message(&responses[1]).contains("Transfer-Encoding"));
    }

    #[test]
    fn http_1_0_gets_one_answer() {
        let (result, responses) =
            serve(b"GET /api/v1/vmm.ping HTTP/1.0\r\n\r\nGET /api/v1/vmm.ping HTTP/1.0\r\n\r\n");

        assert!(result.is_ok());
        assert_eq!(responses.len(), 1);
    }
}
