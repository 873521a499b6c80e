//! The registry harness against the real `docker-registry`: anonymous and basic-auth access, the access
//! log, stop and restart.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::Result;
use wasmkube_harness::registry::{Credentials, Registry};
use wasmkube_harness::require_root;

/// Status code of a plain HTTP/1.1 GET, optionally with a basic `Authorization` header value.
fn get_status(host: &str, path: &str, authorization: Option<&str>) -> Result<u16> {
    let mut s = TcpStream::connect(host)?;
    let auth = authorization.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply.split_whitespace().nth(1).unwrap_or("").parse()?;
    Ok(status)
}

#[test]
fn registry_serves_stops_restarts_and_demands_auth() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut open = Registry::start()?;
    assert_eq!(get_status(&open.host(), "/v2/", None)?, 200);
    assert_eq!(get_status(&open.host(), "/v2/app/blobs/sha256:00", None)?, 400, "an invalid digest is refused");
    assert!(open.log().contains("GET /v2/"), "the access log records requests: {}", open.log());
    open.stop();
    assert!(TcpStream::connect(open.host()).is_err(), "a stopped registry is unreachable");
    open.restart()?;
    assert_eq!(get_status(&open.host(), "/v2/", None)?, 200);

    // "alice:s3cret" in base64.
    let creds = Credentials { username: "alice".into(), password: "s3cret".into() };
    let locked = Registry::start_with(Some(creds))?;
    assert_eq!(get_status(&locked.host(), "/v2/", None)?, 401);
    assert_eq!(get_status(&locked.host(), "/v2/", Some("YWxpY2U6czNjcmV0"))?, 200);
    assert_eq!(get_status(&locked.host(), "/v2/", Some("YWxpY2U6d3Jvbmc="))?, 401, "alice:wrong");
    Ok(())
}
