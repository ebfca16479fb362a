//! The network programs audit and never enforce: a program that fails (here, every record it
//! writes is lost because nobody drains the ring) still lets the connect through.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use sensor_user::kernel::{LoadOptions, Sensor};

const HOOKS_ACTOR: &str = env!("CARGO_BIN_EXE_hooks_actor");

fn lost_connects(sensor: &Sensor) -> u64 {
    sensor
        .counters()
        .into_iter()
        .find(|(name, _)| *name == "lost_connect")
        .map(|(_, n)| n)
        .expect("lost_connect counter")
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.status().expect("spawn hooks_actor").success()
}

#[test]
fn a_failing_network_program_never_denies_a_connect() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // Every repeat is sent, and the ring is never drained: it fills, then every record the
    // network programs try to write fails.
    let sensor = Sensor::load(&LoadOptions {
        filter_repeats: false,
        ..LoadOptions::default()
    })
    .expect("load the sensor");

    let deadline = Instant::now() + Duration::from_secs(60);
    while lost_connects(&sensor) == 0 {
        assert!(Instant::now() < deadline, "the ring never filled");
        assert!(succeeds(Command::new(HOOKS_ACTOR).args([
            "sendto",
            "127.0.0.1:9",
            "50000"
        ])));
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lost_before = lost_connects(&sensor);
    // The UDP connect's record is written by the connect4 program itself, and lost.
    assert!(
        succeeds(Command::new(HOOKS_ACTOR).args(["connect-udp", &addr])),
        "a UDP connect was denied"
    );
    assert!(
        lost_connects(&sensor) > lost_before,
        "the connect4 program did not fail: the test proves nothing"
    );
    assert!(
        succeeds(Command::new(HOOKS_ACTOR).args(["connect", &addr])),
        "a TCP connect was denied"
    );
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection arrived");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    // Sends go through too.
    assert!(succeeds(Command::new(HOOKS_ACTOR).args([
        "sendto",
        "127.0.0.1:9",
        "1"
    ])));
}
