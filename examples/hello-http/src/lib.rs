//! A wasi:http component (exports `wasi:http/incoming-handler`) for the shim's HTTP tests:
//!
//! - `/` answers 200 `hello from wasmkube`;
//! - `/slow?ms=N` sleeps N milliseconds, then answers `slept N ms`;
//! - `/trap` panics, which traps the instance;
//! - `/fetch?url=URL` calls URL through wasi:http/outgoing-handler and answers `status N`, or 502 with
//!   the error it saw;
//! - `/echo` answers the request body;
//! - `GET /file?path=P` answers the file at P (a path in one of its volumes), or 404 with the error it saw;
//!   `PUT /file?path=P` writes the request body there.
//!
//! With `HELLO_HTTP_LOG_REQUESTS=true` in its environment, every request also prints one line to stdout
//! (`hello-http: GET /path`), so tests can see the guest's output in the container log. It is off by default,
//! as the runtime's access log is: a line per request costs the whole log path, and `GET /` is what the HTTP
//! benchmark measures.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(HelloHttp);

struct HelloHttp;

impl wasi::exports::http::incoming_handler::Guest for HelloHttp {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        if std::env::var("HELLO_HTTP_LOG_REQUESTS").is_ok_and(|v| v == "true") {
            println!("hello-http: {} {path_with_query}", method_name(&request.method()));
        }
        let (status, body) = match path {
            "/" => (200, b"hello from wasmkube".to_vec()),
            // The readiness path of examples/wasmapps/http-hello.yaml.
            "/healthz" => (200, b"ok".to_vec()),
            "/slow" => {
                let ms = param(query, "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1000);
                std::thread::sleep(Duration::from_millis(ms));
                (200, format!("slept {ms} ms").into_bytes())
            }
            "/trap" => panic!("hello-http: /trap asked for a trap"),
            "/fetch" => match param(query, "url") {
                Some(url) => match fetch(&url) {
                    Ok(status) => (200, format!("status {status}").into_bytes()),
                    Err(e) => (502, format!("outbound request failed: {e}").into_bytes()),
                },
                None => (400, b"missing ?url=".to_vec()),
            },
            "/file" => match param(query, "path") {
                Some(path) => file(request, &path),
                None => (400, b"missing ?path=".to_vec()),
            },
            "/echo" => match read_body(request) {
                Ok(body) => (200, body),
                Err(e) => (400, format!("cannot read the request body: {e}").into_bytes()),
            },
            _ => (404, b"not found".to_vec()),
        };
        respond(response_out, status, &body);
    }
}

/// `GET` reads the file at `path`, `PUT` writes the request body to it.
fn file(request: IncomingRequest, path: &str) -> (u16, Vec<u8>) {
    let done = match request.method() {
        Method::Put => read_body(request).and_then(|body| std::fs::write(path, body).map_err(|e| e.to_string())),
        _ => return std::fs::read(path).map_or_else(|e| (404, format!("{path}: {e}").into_bytes()), |b| (200, b)),
    };
    match done {
        Ok(()) => (200, format!("wrote {path}").into_bytes()),
        Err(e) => (403, format!("{path}: {e}").into_bytes()),
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Other(other) => other.clone(),
        _ => "OTHER".into(),
    }
}

/// The value of `name` in a query string (no percent-decoding: tests pass plain URLs).
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(mut out) = outgoing.write() {
        // `blocking_write_and_flush` takes at most 4096 bytes per call; the std Write impl loops.
        let _ = out.write_all(body);
        let _ = out.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn read_body(request: IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|()| "body already taken".to_string())?;
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "no body stream".to_string())?;
        stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    }
    Ok(bytes)
}

/// GETs `url` (http or https) and returns the response status.
fn fetch(url: &str) -> Result<u16, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("not an http(s) URL: {url}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "invalid scheme".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("invalid authority {authority}"))?;
    request.set_path_with_query(Some(path)).map_err(|()| format!("invalid path {path}"))?;
    let future = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    let response: IncomingResponse = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(e))) => return Err(describe(&e)),
            Some(Err(())) => return Err("response already taken".into()),
            None => future.subscribe().block(),
        }
    };
    Ok(response.status())
}

fn describe(e: &ErrorCode) -> String {
    format!("{e:?}")
}
