//! A wasi:http handler over wasi:keyvalue, one bucket per tenant: the
//! tenant is the first label of the Host header (`acme.localhost:8080` is
//! `acme`).
//!
//! - `GET /KEY`: the value (200), or 404;
//! - `PUT /KEY` with a body: stores it (204);
//! - `DELETE /KEY`: removes it (204);
//! - `POST /count/NAME`: adds one to NAME's counter, answers the count.
//!
//! A failure of the store answers 503 with its message.

wit_bindgen::generate!({ world: "app", path: "wit", generate_all });

use wasi::keyvalue::{atomics, store};
use wasip2::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct App;

impl wasip2::exports::http::incoming_handler::Guest for App {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = match serve(&request) {
            Ok(answer) => answer,
            Err(error) => (503, format!("{error:?}").into_bytes()),
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            for chunk in body.chunks(4096) {
                let _ = stream.blocking_write_and_flush(chunk);
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasip2::http::proxy::export!(App);

/// The tenant the Host header names (the request's authority: wasmtime
/// takes the header out of the headers).
fn tenant(request: &IncomingRequest) -> Option<String> {
    let host = request.authority()?;
    let label = host.split([':', '.']).next()?;
    (!label.is_empty()).then(|| label.to_owned())
}

/// The request's body, whole.
fn body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(incoming) = request.consume() else { return bytes };
    if let Ok(stream) = incoming.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    bytes
}

fn serve(request: &IncomingRequest) -> Result<(u16, Vec<u8>), store::Error> {
    let Some(tenant) = tenant(request) else {
        return Ok((400, b"no tenant in the Host header".to_vec()));
    };
    let path = request.path_with_query().unwrap_or_default();
    let key = path.trim_start_matches('/');
    let bucket = store::open(&tenant)?;
    Ok(match (request.method(), key.strip_prefix("count/")) {
        (Method::Post, Some(name)) => {
            let count = atomics::increment(&bucket, name, 1)?;
            (200, count.to_string().into_bytes())
        }
        (Method::Get, _) => match bucket.get(key)? {
            Some(value) => (200, value),
            None => (404, Vec::new()),
        },
        (Method::Put, _) => {
            bucket.set(key, &body(request))?;
            (204, Vec::new())
        }
        (Method::Delete, _) => {
            bucket.delete(key)?;
            (204, Vec::new())
        }
        _ => (405, Vec::new()),
    })
}
