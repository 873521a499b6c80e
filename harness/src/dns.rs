//! A small authoritative DNS server over UDP for tests: fixed A records, NXDOMAIN for every other name, and
//! a record of who asked for what (to show which network namespace a look-up came from).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{IoContext, Result};

/// One question the server was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: SocketAddr,
    /// The name, lowercase, without the final dot.
    pub name: String,
    /// 1 for A, 28 for AAAA.
    pub qtype: u16,
}

/// The server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<Query>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

impl DnsServer {
    /// Serves `records` (name → IPv4 address) on `bind`.
    pub fn start(bind: SocketAddr, records: HashMap<String, Ipv4Addr>) -> Result<Self> {
        let socket = UdpSocket::bind(bind).ctx(|| format!("binding a DNS server to {bind}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(100))).ctx(|| "setting a read timeout".to_string())?;
        let addr = socket.local_addr().ctx(|| "reading the DNS server's address".to_string())?;
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
                let Some((name, qtype, question_end)) = question(&buf[..len]) else { continue };
                let answer = (qtype == TYPE_A).then(|| records.get(&name).copied()).flatten();
                let known = records.contains_key(&name);
                if let Ok(mut log) = log.lock() {
                    log.push(Query { from, name, qtype });
                }
                let reply = reply(&buf[..question_end], known, answer);
                let _ = socket.send_to(&reply, from);
            }
        });
        Ok(Self { addr, queries, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The questions asked so far, in order.
    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The name and type of a query's first question, and where the question ends.
fn question(packet: &[u8]) -> Option<(String, u16, usize)> {
    if packet.len() < 12 || u16::from_be_bytes([packet[4], packet[5]]) == 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// The answer to `query` (header and question): the A record when given, else no answer — NOERROR for a
/// known name (it has no record of that type), NXDOMAIN for an unknown one.
fn reply(query: &[u8], known: bool, answer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut out = query.to_vec();
    // QR, opcode 0, AA, RD copied; RA; rcode 0 or 3.
    out[2] = 0x84 | (query[2] & 0x01);
    out[3] = 0x80 | if known { 0 } else { 3 };
    out[6..8].copy_from_slice(&u16::from(answer.is_some()).to_be_bytes());
    out[8..12].fill(0);
    if let Some(ip) = answer {
        out.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&30u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn answers_known_names_and_refuses_others() -> Result<()> {
        let records = HashMap::from([("backend.apps.svc".to_string(), Ipv4Addr::new(10, 1, 2, 3))]);
        let server = DnsServer::start("127.0.0.1:0".parse().unwrap(), records)?;
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        client.send_to(&query("Backend.apps.svc", TYPE_A), server.addr()).unwrap();
        let len = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0x12, 0x34], "same id");
        assert_eq!(buf[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&buf[len - 4..len], &[10, 1, 2, 3]);
        client.send_to(&query("backend.apps.svc", 28), server.addr()).unwrap();
        let len = client.recv(&mut buf).unwrap();
        assert_eq!((buf[3] & 0x0f, buf[7], len), (0, 0, query("backend.apps.svc", 28).len()), "no AAAA record");
        client.send_to(&query("other", TYPE_A), server.addr()).unwrap();
        client.recv(&mut buf).unwrap();
        assert_eq!(buf[3] & 0x0f, 3, "NXDOMAIN");
        let names: Vec<String> = server.queries().into_iter().map(|q| q.name).collect();
        assert_eq!(names, ["backend.apps.svc", "backend.apps.svc", "other"]);
        Ok(())
    }
}
