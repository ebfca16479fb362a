//! The benign workloads: CI jobs built with real tools, most of them with dependencies from a
//! real registry (crates.io, npm, PyPI), and a long-running service (see `service`).
//!
//! A job's script is what a GitHub Actions workflow would run after checkout and cache restore:
//! the registry caches live under `target/detect-cache` and are filled by a real fetch the first
//! time (see `cache`), so the jobs themselves build offline, from clean, every run.

/// A benign workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum Workload {
    /// A C project built with make + gcc (no registry).
    C,
    /// A Rust crate depending on crates from crates.io, built and tested with cargo.
    Rust,
    /// A Node project: `npm ci` from the npm registry, then `npm test`.
    Node,
    /// A Python project: a venv, dependencies from PyPI installed with pip, tested with pytest.
    Python,
    /// git init/add/commit of the checkout, a tarball of it, and a shell script: git's random
    /// object and temporary names (issue 14's noise), no registry.
    Git,
    /// nginx serving files under a paced HTTP load, with reloads and log reopening: the
    /// time-based learning path (`--learning-period`).
    Service,
}

impl Workload {
    /// Every CI-job workload, in report order.
    pub const JOBS: [Workload; 5] = [
        Workload::C,
        Workload::Rust,
        Workload::Node,
        Workload::Python,
        Workload::Git,
    ];

    pub fn job(self) -> &'static str {
        match self {
            Workload::C => "c-make",
            Workload::Rust => "rust-cargo",
            Workload::Node => "node-npm",
            Workload::Python => "python-pip",
            Workload::Git => "git-tar",
            Workload::Service => "nginx-service",
        }
    }

    /// The build and test steps of the job script (runs in `$WS` under `set -eu`).
    pub fn build(self) -> &'static str {
        match self {
            Workload::C => "make -s\n./hello-c > out.txt\n",
            Workload::Rust => {
                "cargo build --locked --offline --quiet\ncargo test --locked --offline --quiet > /dev/null\n./target/debug/hello-rs > out.txt\n"
            }
            Workload::Node => {
                "npm ci --offline --no-audit --no-fund --loglevel=error > /dev/null\nnpm test > test.log 2>&1\nnode index.js > out.txt\n"
            }
            Workload::Python => {
                "python3 -m venv venv\n./venv/bin/pip install --quiet --no-index --find-links \"$WHEELHOUSE\" -r requirements.txt\n./venv/bin/python -m pytest -q -p no:cacheprovider tests > test.log\n./venv/bin/python app.py > out.txt\n"
            }
            Workload::Git => {
                "git init -q -b main .\ngit add -A\ngit -c user.name=ci -c user.email=ci@example.invalid commit -q -m build\ntar -czf dist.tgz README.md src scripts\nsh scripts/info.sh > out.txt\n"
            }
            Workload::Service => "",
        }
    }

    /// The build output an attacker may tamper with, relative to `$WS`.
    pub fn artifact(self) -> &'static str {
        match self {
            Workload::C => "hello-c",
            Workload::Rust => "target/debug/hello-rs",
            Workload::Node => "node_modules/semver/index.js",
            Workload::Python => "venv/bin/activate",
            Workload::Git => "dist.tgz",
            Workload::Service => "index.html",
        }
    }

    /// The checked-out sources. Lock files produced by the first fetch are added by `cache`.
    pub fn sources(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Workload::C => &[
                (
                    "Makefile",
                    "hello-c: main.o util.o\n\tgcc -o $@ $^\n%.o: %.c util.h\n\tgcc -O1 -Wall -c -o $@ $<\n",
                ),
                ("util.h", "int sum(int n);\n"),
                (
                    "util.c",
                    "#include \"util.h\"\nint sum(int n) { int s = 0; for (int i = 0; i < n; i++) s += i; return s; }\n",
                ),
                (
                    "main.c",
                    "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", sum(100)); return 0; }\n",
                ),
            ],
            Workload::Rust => &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"hello-rs\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n# A project of its own, even inside this repository's target/ (the cache seed).\n[workspace]\n\n[dependencies]\nanyhow = \"1\"\nfastrand = \"2\"\nitoa = \"1\"\nmemchr = \"2\"\n",
                ),
                (
                    "src/main.rs",
                    "fn main() -> anyhow::Result<()> {\n    let mut rng = fastrand::Rng::with_seed(7);\n    let mut buf = itoa::Buffer::new();\n    let n = buf.format(rng.u32(..1000));\n    println!(\"{n} {:?}\", memchr::memchr(b'x', b\"abcx\"));\n    Ok(())\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn formats() {\n        assert_eq!(itoa::Buffer::new().format(42u8), \"42\");\n    }\n}\n",
                ),
            ],
            Workload::Node => &[
                (
                    "package.json",
                    "{\n  \"name\": \"hello-node\",\n  \"version\": \"1.0.0\",\n  \"private\": true,\n  \"scripts\": { \"test\": \"node --test\" },\n  \"dependencies\": { \"ms\": \"2.1.3\", \"semver\": \"7.6.3\" }\n}\n",
                ),
                (
                    "index.js",
                    "const ms = require('ms');\nconst semver = require('semver');\nconsole.log(ms('2h'), semver.inc('1.2.3', 'minor'));\n",
                ),
                (
                    "test/version.test.js",
                    "const test = require('node:test');\nconst assert = require('node:assert');\nconst ms = require('ms');\nconst semver = require('semver');\ntest('parses', () => {\n  assert.equal(ms('2s'), 2000);\n  assert.ok(semver.gt('1.2.3', '1.0.0'));\n});\n",
                ),
            ],
            Workload::Python => &[
                ("requirements.txt", PY_REQUIREMENTS),
                (
                    "app.py",
                    "import json, hashlib, os\nfiles = sorted(os.listdir('.'))\nprint(json.dumps({'files': files, 'sha': hashlib.sha256(b'x').hexdigest()}))\n",
                ),
                (
                    "tests/test_app.py",
                    "import hashlib\nfrom packaging.version import Version\n\ndef test_digest():\n    assert len(hashlib.sha256(b'x').hexdigest()) == 64\n\ndef test_versions():\n    assert Version('1.10') > Version('1.9')\n",
                ),
            ],
            Workload::Git => &[
                (
                    "README.md",
                    "# hello\n\nA repository built into a tarball.\n",
                ),
                ("src/greeting.txt", "hello, world\n"),
                (
                    "scripts/info.sh",
                    "set -eu\necho \"files: $(git ls-files | wc -l)\"\necho \"head: $(git rev-parse --short HEAD)\"\nsha256sum dist.tgz | cut -c1-16\n",
                ),
            ],
            Workload::Service => &[],
        }
    }
}

/// The Python job's pinned dependencies (pytest pulls iniconfig, packaging and pluggy).
pub const PY_REQUIREMENTS: &str =
    "pytest==8.3.3\npackaging==24.1\niniconfig==2.0.0\npluggy==1.5.0\n";
