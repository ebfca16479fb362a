//! The Debian packages (`cargo xtask package`), built from this build's binaries and checked
//! with dpkg-deb: files, modes, conffiles, units, control fields and maintainer scripts.
//! (Installing them on a real systemd host is `cargo xtask systemd-check`'s job.)

use std::path::Path;
use std::process::Command;

use tests::workspace_bin;

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One member of the data (or, with `control`, the control) archive.
fn member(deb: &Path, control: bool, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let flag = if control { "-e" } else { "-x" };
    let status = Command::new("dpkg-deb")
        .arg(flag)
        .arg(deb)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn packages_hold_binaries_units_configs_and_keep_state() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        println!("skipped: dpkg-deb is not installed (not a Debian system)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let bins = workspace_bin("sensor").parent().unwrap().to_path_buf();
    let built = Command::new(workspace_bin("xtask"))
        .args(["package", "--uncompressed", "--binaries"])
        .arg(&bins)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "xtask package: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    for (name, config, other_config) in [
        ("sensor", "sensor.toml", "collector.toml"),
        ("collector", "collector.toml", "sensor.toml"),
    ] {
        let deb = std::fs::read_dir(out.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}_"))
            })
            .unwrap_or_else(|| panic!("no {name} package"));

        let contents = dpkg_deb(&["-c"], &deb);
        let mode_of = |path: &str| {
            contents
                .lines()
                .find(|l| l.ends_with(path))
                .unwrap_or_else(|| panic!("{name} lacks {path}: {contents}"))
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(mode_of(&format!("./usr/bin/{name}")), "-rwxr-xr-x");
        assert_eq!(mode_of(&format!("./etc/sensor/{config}")), "-rw-r-----");
        assert_eq!(
            mode_of(&format!("./lib/systemd/system/{name}.service")),
            "-rw-r--r--"
        );
        assert!(!contents.contains(other_config), "{contents}");
        assert!(!contents.contains("/usr/local"), "{contents}");
        assert!(
            !contents.contains("/var/lib"),
            "state is made at run time: {contents}"
        );

        let control = dpkg_deb(&["-f"], &deb);
        assert!(control.contains(&format!("Package: {name}\n")), "{control}");
        assert!(control.contains("Depends: "), "{control}");
        assert_eq!(
            member(&deb, true, "conffiles").trim(),
            format!("/etc/sensor/{config}")
        );

        // The packaged unit runs the packaged binary with the packaged configuration.
        // (The collector reads it as a systemd credential: root's file, handed to its dynamic
        // user.)
        let unit = member(&deb, false, &format!("lib/systemd/system/{name}.service"));
        let exec = if name == "sensor" {
            format!("ExecStart=/usr/bin/sensor run --config /etc/sensor/{config}")
        } else {
            assert!(
                unit.contains(&format!("LoadCredential=config:/etc/sensor/{config}")),
                "{unit}"
            );
            "ExecStart=/usr/bin/collector serve --config ${CREDENTIALS_DIRECTORY}/config".to_owned()
        };
        assert!(unit.contains(&exec), "{unit}");
        assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
        // The shipped configuration is the example the binary documents.
        let shipped = member(&deb, false, &format!("etc/sensor/{config}"));
        let source = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../packaging")
                .join(config),
        )
        .unwrap();
        assert_eq!(shipped, source);

        // Maintainer scripts: valid shell; group and enable on configure; stop before removal
        // and upgrade; state deleted on purge only.
        let postinst = member(&deb, true, "postinst");
        let prerm = member(&deb, true, "prerm");
        let postrm = member(&deb, true, "postrm");
        for (script, text) in [
            ("postinst", &postinst),
            ("prerm", &prerm),
            ("postrm", &postrm),
        ] {
            let check = Command::new("sh")
                .args(["-n", "-c", text])
                .status()
                .unwrap();
            assert!(check.success(), "{name} {script} is not valid sh:\n{text}");
        }
        assert!(postinst.contains("groupadd --system sensor"), "{postinst}");
        assert!(postinst.contains(&format!("chgrp sensor /etc/sensor/{config}")));
        assert!(postinst.contains(&format!("deb-systemd-helper enable {name}.service")));
        assert!(postinst.contains(&format!("deb-systemd-invoke restart {name}.service")));
        assert!(!postinst.contains("rm "), "{postinst}");
        assert!(prerm.contains(&format!("deb-systemd-invoke stop {name}.service")));
        assert!(
            prerm.contains("upgrade") && !prerm.contains("rm "),
            "{prerm}"
        );
        let purge = postrm.find("\"$1\" = purge").expect("a purge branch");
        let rm = postrm
            .find("rm -rf /var/lib/")
            .expect("purge deletes state");
        assert!(rm > purge, "state deleted under purge only: {postrm}");

        // The packaged binary is this build's and runs.
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(dir.path())
                .status()
                .unwrap()
                .success()
        );
        let help = Command::new(dir.path().join("usr/bin").join(name))
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "{name} --help");
    }
}
