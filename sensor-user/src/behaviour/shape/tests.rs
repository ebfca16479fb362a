use super::*;

/// Names git gives its files in five runs of `git init; git add; git commit` (taken from a real
/// run): two-hex-digit object directories, `tmp_obj_` + mkstemp's 6 base62 characters, the
/// index lock's `tXXXXXX`-like temporary and the fixed names around them.
fn git_paths() -> Vec<String> {
    let objects = [
        ("3a", "tmp_obj_Xb2c9Q"),
        ("f1", "tmp_obj_k9LmZ0"),
        ("0b", "tmp_obj_7hQw2e"),
        ("9c", "tmp_obj_P0oIu8"),
        ("e4", "tmp_obj_aZ19xY"),
        ("57", "tmp_obj_Rr4tT5"),
    ];
    let mut out = Vec::new();
    for (dir, tmp) in objects {
        out.push(format!("/w/.git/objects/{dir}/{tmp}"));
        out.push(format!("/w/.git/objects/{dir}"));
    }
    for t in ["tA1b2C3", "tZ9y8X7", "tq0W1e2", "tM5n6B7", "t3Kj8Hg"] {
        out.push(format!("/w/.git/{t}"));
    }
    for fixed in [
        "COMMIT_EDITMSG",
        "AUTO_MERGE.lock",
        "index.lock",
        "HEAD",
        "config",
        "objects",
        "description",
    ] {
        out.push(format!("/w/.git/{fixed}"));
    }
    out
}

fn learn(paths: &[String]) -> Vec<String> {
    learn_shapes(paths.iter().map(String::as_str))
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn matches_any(shapes: &[PathShape], path: &str) -> bool {
    shapes.iter().any(|s| s.matches(path))
}

#[test]
fn git_names_fold_into_shapes() {
    let shapes = learn(&git_paths());
    assert_eq!(
        shapes,
        [
            "/w/.git/objects/{hex2}",
            "/w/.git/objects/{hex2}/tmp_obj_{alnum6}",
            "/w/.git/t{alnum6}",
        ]
    );
    let parsed: Vec<PathShape> = shapes.iter().map(|s| s.parse().expect("parses")).collect();
    // A clean run's new names fold.
    for path in [
        "/w/.git/objects/c7/tmp_obj_QwErT1",
        "/w/.git/objects/c7",
        "/w/.git/tUu7Ii8",
    ] {
        assert!(matches_any(&parsed, path), "{path}");
    }
    // Fixed names stay themselves (they are learnt as they are), other names do not fold.
    for path in [
        "/w/.git/COMMIT_EDITMSG",
        "/w/.git/objects/c7/evil_obj_QwErT1",
        "/w/.git/objects/zz/tmp_obj_QwErT1",
        "/w/.git/objects/c7/tmp_obj_QwErT1/x",
        "/w/.git/objects/c7/tmp_obj_QwE-T1",
        "/w/.git/hooks/pre-commit",
        "/w/.git/x1234567",
        "/x/.git/tUu7Ii8",
    ] {
        assert!(!matches_any(&parsed, path), "{path}");
    }
}

#[test]
fn shapes_print_and_parse_alike() {
    for text in [
        "/w/.git/objects/{hex2}/tmp_obj_{alnum6}",
        "/tmp/{lower8}.lock",
        "/run/x-{digits5}-y/{hex40}",
        "/etc/plain",
    ] {
        let shape: PathShape = text.parse().expect("parses");
        assert_eq!(shape.to_string(), text);
        let json = serde_json::to_string(&shape).expect("serialises");
        let back: PathShape = serde_json::from_str(&json).expect("reads");
        assert_eq!(back, shape);
    }
}

#[test]
fn mkstemp_names_with_fixed_prefix_and_suffix() {
    let names = [
        "build-a1B2c3.log",
        "build-Zz9Yy8.log",
        "build-0oO0o9.log",
        "build-Qw3rty.log",
    ];
    let paths: Vec<String> = names.iter().map(|n| format!("/srv/logs/{n}")).collect();
    assert_eq!(learn(&paths), ["/srv/logs/build-{alnum6}.log"]);
    // Three values are not enough.
    assert!(learn(&paths[..3]).is_empty());
}

#[test]
fn words_and_versions_do_not_fold() {
    let words: Vec<String> = ["passwd", "shadow", "gshadow", "groups", "hostid", "issues"]
        .iter()
        .map(|n| format!("/etc/{n}"))
        .collect();
    assert!(learn(&words).is_empty(), "{:?}", learn(&words));
    let libs: Vec<String> = ["libc.so.6", "libm.so.6", "libz.so.1", "libdl.so.2"]
        .iter()
        .map(|n| format!("/usr/lib/{n}"))
        .collect();
    assert!(learn(&libs).is_empty(), "{:?}", learn(&libs));
    // Crate names: one holds a digit, the others are words.
    let crates: Vec<String> = ["anyhow", "memchr", "base64", "syntax", "either", "rayon1"]
        .iter()
        .map(|n| format!("/t/deps/lib{n}-<hash>.rlib"))
        .collect();
    assert!(learn(&crates).is_empty(), "{:?}", learn(&crates));
    // One changing character is a name, not a random part.
    let numbered: Vec<String> = (1..=6).map(|i| format!("/srv/part{i}.txt")).collect();
    assert!(learn(&numbered).is_empty());
}

#[test]
fn a_shape_does_not_swallow_a_secret_path() {
    // Four random files under the home directory: the slot is learnt for that directory only,
    // and its shape (length, alphabet, punctuation) excludes the key files beside it.
    let paths: Vec<String> = ["a1B2c3", "Zz9Yy8", "0oO0o9", "Qw3rty"]
        .iter()
        .map(|n| format!("/home/u/.cache/{n}"))
        .collect();
    let shapes: Vec<PathShape> = learn_shapes(paths.iter().map(String::as_str));
    assert_eq!(shapes.len(), 1);
    for secret in [
        "/home/u/.ssh/id_rsa",
        "/home/u/.cache/id_rsa",
        "/home/u/.cache/.netrc",
        "/home/u/.aws/credentials",
        "/home/u/.cache/a1B2c3/.ssh/id_ed25519",
    ] {
        assert!(!matches_any(&shapes, secret), "{secret}");
    }
}

#[test]
fn slot_directories_gather_what_is_below_them() {
    // Each random directory holds one file: only once the directory is a slot do the files share
    // a parent, and become a shape themselves.
    let paths: Vec<String> = [
        ("ab", "1f2e"),
        ("c3", "9a8b"),
        ("4d", "0c7d"),
        ("e5", "6e5f"),
    ]
    .iter()
    .map(|(d, f)| format!("/cache/{d}/{f}.bin"))
    .collect();
    assert_eq!(learn(&paths), ["/cache/{hex2}/{hex4}.bin"]);
}

/// git's symlink probe `.git/tXXXXXX` (mkstemp, base62) in five learning runs where most names
/// happen to hold no digit (a third of them do not): both cases say they are generated, and
/// the names of the clean runs of the noise measurement fold.
#[test]
fn base62_names_without_digits_fold() {
    let learnt: Vec<String> = ["tKqPzRw", "tMbVnXa", "tdN9yUZ", "tHgFjQe", "t5NB6a9"]
        .iter()
        .map(|t| format!("/w/.git/{t}"))
        .collect();
    let shapes = learn(&learnt);
    assert_eq!(shapes, ["/w/.git/t{alnum6}"]);
    let parsed: Vec<PathShape> = shapes.iter().map(|s| s.parse().expect("parses")).collect();
    for t in ["t74BhjI", "t8JrpxF", "tdN9yUZ", "t5NB6a9"] {
        assert!(matches_any(&parsed, &format!("/w/.git/{t}")), "{t}");
    }
    // Lowercase words stay words.
    let words: Vec<String> = ["tcommit", "tbranch", "tremote", "tstatus"]
        .iter()
        .map(|t| format!("/w/.git/{t}"))
        .collect();
    assert!(learn(&words).is_empty(), "{:?}", learn(&words));
}
