#!/usr/bin/env python3
"""Cluster DNS of the local cluster (scripts/local-cluster.sh), which has no CoreDNS image to run. Answers over UDP
and TCP on ADDRESS:53:
  A  <service>.<namespace>.svc.<domain>  -> the Service's ClusterIP (headless: the ready addresses of its EndpointSlices)
and NXDOMAIN for every other name: nothing is forwarded, no query leaves the machine. Services and EndpointSlices
are listed from the API server every 5 s, and at most every 0.5 s when a Service name is not known yet.
usage: local-dns.py --address IP --server URL --ca FILE --cert FILE --key FILE [--domain cluster.local]"""
import argparse
import json
import socket
import socketserver
import ssl
import struct
import threading
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--address", required=True)
ap.add_argument("--server", required=True)
ap.add_argument("--ca", required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--domain", default="cluster.local")
args = ap.parse_args()
DOMAIN = args.domain.strip(".").lower()
tls = ssl.create_default_context(cafile=args.ca)
tls.load_cert_chain(args.cert, args.key)
lock = threading.Lock()
names = {}
last_list = [0.0]


def get(path):
    with urllib.request.urlopen(args.server + path, context=tls, timeout=5) as reply:
        return json.load(reply)


def refresh(force=False):
    with lock:
        if not force and time.time() - last_list[0] < 0.5:
            return
        last_list[0] = time.time()
    try:
        services = get("/api/v1/services")["items"]
        slices = get("/apis/discovery.k8s.io/v1/endpointslices")["items"]
    except Exception as e:  # the API server restarts or is not up yet: keep the last answers
        print("listing services failed:", e, flush=True)
        return
    ready = {}
    for s in slices:
        service = s["metadata"].get("labels", {}).get("kubernetes.io/service-name")
        if not service:
            continue
        for endpoint in s.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                ready.setdefault((s["metadata"]["namespace"], service), []).extend(endpoint.get("addresses", []))
    found = {}
    for s in services:
        ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
        ip = s["spec"].get("clusterIP")
        fqdn = f"{name}.{ns}.svc.{DOMAIN}"
        if ip and ip != "None":
            found[fqdn] = [ip]
        elif s["spec"].get("type") == "ExternalName":
            found[fqdn] = []
        else:
            found[fqdn] = [a for a in ready.get((ns, name), []) if ":" not in a]
    with lock:
        names.clear()
        names.update(found)


def answer(query):
    if len(query) < 12:
        return None
    qid, flags, questions = struct.unpack(">HHH", query[:6])
    if questions != 1:
        return struct.pack(">HHHHHH", qid, 0x8184, 0, 0, 0, 0)  # not implemented
    i, labels = 12, []
    while i < len(query) and query[i]:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, _ = struct.unpack(">HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    name = ".".join(labels).lower()
    with lock:
        ips = names.get(name)
    # Only a name of the form <service>.<namespace>.svc.<domain> may be a Service not listed yet; resolvers also try
    # that name with each search domain appended, which must get its NXDOMAIN at once.
    if ips is None and name.endswith(".svc." + DOMAIN) and name[:-len(".svc." + DOMAIN)].count(".") == 1:
        refresh()
        with lock:
            ips = names.get(name)
    rd = flags & 0x0100
    if ips is None:  # NXDOMAIN, authoritative
        return struct.pack(">HHHHHH", qid, 0x8403 | rd, 1, 0, 0, 0) + question
    if qtype not in (1, 255):  # no AAAA or other records: an empty answer
        ips = []
    records = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(ip) for ip in ips)
    return struct.pack(">HHHHHH", qid, 0x8400 | rd, 1, len(ips), 0, 0) + question + records


class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        reply = answer(data)
        if reply:
            sock.sendto(reply, self.client_address)


class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        head = self.request.recv(2)
        if len(head) < 2:
            return
        n, data = struct.unpack(">H", head)[0], b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                return
            data += chunk
        reply = answer(data)
        if reply:
            self.request.sendall(struct.pack(">H", len(reply)) + reply)


class UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True


class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def relist():
    while True:
        time.sleep(5)
        refresh(force=True)


refresh(force=True)
threading.Thread(target=relist, daemon=True).start()
threading.Thread(target=TcpServer((args.address, 53), Tcp).serve_forever, daemon=True).start()
print(f"cluster DNS on {args.address}:53 for *.svc.{DOMAIN}", flush=True)
UdpServer((args.address, 53), Udp).serve_forever()
