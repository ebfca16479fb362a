//! Network events from the real kernel programs: connect, bind, listen, accept and DNS.

use std::io::BufRead;
use std::net::{Ipv6Addr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use sensor_user::event::{ConnectResult, EventKind, Protocol};

use tests::{KernelHarness, run};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");
const HOOKS_ACTOR: &str = env!("CARGO_BIN_EXE_hooks_actor");

/// Issue 12: a datagram sent with `sendto` to any port (not only 53), without connect, is a
/// destination (the cgroup `sendmsg4/6` hooks).
#[test]
fn udp_sendto_any_port_is_a_destination() {
    let k = KernelHarness::shared();
    for to in ["127.0.0.1:9999", "[::1]:9998"] {
        let pid = run(Command::new(HOOKS_ACTOR).args(["sendto", to, "3"]));
        let e = k.expect("udp send", |e| {
            e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
        });
        let to: std::net::SocketAddr = to.parse().unwrap();
        assert_eq!(
            e.kind,
            EventKind::Connect {
                address: to.ip(),
                port: to.port(),
                protocol: Protocol::Udp,
                result: ConnectResult::Sent
            }
        );
    }
}

/// Issue 12: TCP Fast Open (`sendto` with `MSG_FASTOPEN`, never `connect`) is a connect.
#[test]
fn tcp_fast_open_is_a_connect() {
    let k = KernelHarness::shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pid = run(Command::new(HOOKS_ACTOR).args(["tfo", &format!("127.0.0.1:{port}")]));
    let e = k.expect("fast open connect", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
    });
    assert!(
        matches!(
            e.kind,
            EventKind::Connect { address, port: p, protocol: Protocol::Tcp, .. }
                if p == port && address == std::net::IpAddr::from([127, 0, 0, 1])
        ),
        "{e:?}"
    );
    drop(listener);
}

#[test]
fn tcp_connect_v4_has_address_port_and_result() {
    let k = KernelHarness::shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pid = run(Command::new(ACTOR).args(["connect", &format!("127.0.0.1:{port}")]));
    let e = k.expect("connect", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        e.kind,
        EventKind::Connect {
            address: "127.0.0.1".parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            result: ConnectResult::Connected
        }
    );
    drop(listener);
}

#[test]
fn refused_tcp_connect_v6_is_reported_as_failed() {
    let k = KernelHarness::shared();
    // Bind then drop to get a port nobody listens on.
    let port = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pid = run(Command::new(ACTOR).args(["connect", &format!("[::1]:{port}")]));
    let e = k.expect("connect", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        e.kind,
        EventKind::Connect {
            address: Ipv6Addr::LOCALHOST.into(),
            port,
            protocol: Protocol::Tcp,
            result: ConnectResult::Failed(libc::ECONNREFUSED)
        }
    );
}

#[test]
fn udp_connect_is_udp() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).args(["connect-udp", "127.0.0.1:5353"]));
    let e = k.expect("udp connect", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
    });
    assert!(
        matches!(
            e.kind,
            EventKind::Connect {
                protocol: Protocol::Udp,
                port: 5353,
                result: ConnectResult::Connected,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn bind_listen_and_accept() {
    let k = KernelHarness::shared();
    let mut child = Command::new(ACTOR)
        .args(["accept-one", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    assert!(child.wait().unwrap().success());

    let bind = k.expect("bind", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Bind { .. })
    });
    assert!(
        matches!(
            bind.kind,
            EventKind::Bind {
                port: 0,
                protocol: Protocol::Tcp,
                result: 0,
                ..
            }
        ),
        "{bind:?}"
    );
    let listen = k.expect("listen", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Listen { .. })
    });
    assert!(
        matches!(listen.kind, EventKind::Listen { port: p, result: 0, .. } if p == port),
        "{listen:?}"
    );
    let accept = k.expect("accept", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Accept { .. })
    });
    assert_eq!(
        accept.kind,
        EventKind::Accept {
            peer: "127.0.0.1".parse().unwrap(),
            peer_port: client_port,
            local_port: port,
            protocol: Protocol::Tcp
        }
    );
}

#[test]
fn dns_query_and_response_are_read() {
    let k = KernelHarness::shared();
    // A one-shot DNS server on loopback port 53 answering 127.0.0.9.
    let server = UdpSocket::bind("127.0.0.53:53")
        .or_else(|_| UdpSocket::bind("127.0.0.1:53"))
        .expect("bind port 53");
    let addr = server.local_addr().unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        let mut reply = buf[..n].to_vec();
        reply[2] = 0x81; // response, recursion desired
        reply[3] = 0x80;
        reply[7] = 1; // one answer
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9]);
        server.send_to(&reply, from).unwrap();
    });
    let pid = run(Command::new(ACTOR).args(["dns", &addr.to_string(), "exfil.example.test"]));
    responder.join().unwrap();

    let q = k.expect("dns query", |e| {
        e.pid == pid
            && matches!(
                e.kind,
                EventKind::Dns {
                    response: false,
                    ..
                }
            )
    });
    let EventKind::Dns {
        server: s, message, ..
    } = q.kind
    else {
        unreachable!()
    };
    assert_eq!(s, addr.ip());
    let m = message.expect("query parses");
    assert_eq!(
        (m.question.name.as_str(), m.question.qtype.as_str()),
        ("exfil.example.test", "A")
    );

    let r = k.expect("dns response", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Dns { response: true, .. })
    });
    let EventKind::Dns { message, .. } = r.kind else {
        unreachable!()
    };
    assert_eq!(
        message.expect("response parses").addresses,
        vec![std::net::IpAddr::from([127, 0, 0, 9])]
    );
}
