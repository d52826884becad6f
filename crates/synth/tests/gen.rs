//! `qmwatch-gen` writes what the library generates: the same capture bytes
//! and the same truth (the root's tests/synth.rs generates through the
//! library, then replays with the sensor).

use std::process::Command;

use qmwatch_synth::{generate, parse_size, Config, Profile, Target};

#[test]
fn the_command_writes_what_the_library_generates() {
    let dir = tempfile::tempdir().unwrap();
    for profile in ["mixed", "qmtp-heavy", "small-flows"] {
        let (pcap, truth) = (dir.path().join("c.pcap"), dir.path().join("t.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_qmwatch-gen"))
            .args([
                "--profile",
                profile,
                "--seed",
                "3",
                "--bytes",
                "1M",
                "--quiet",
            ])
            .arg("--out")
            .arg(&pcap)
            .arg("--truth")
            .arg(&truth)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "qmwatch-gen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = Config {
            profile: profile.parse::<Profile>().unwrap(),
            seed: 3,
            target: Target::Bytes(parse_size("1M").unwrap()),
        };
        let mut bytes = Vec::new();
        let t = generate(&cfg, &mut bytes).unwrap();
        assert!(bytes == std::fs::read(&pcap).unwrap(), "{profile}: capture");
        assert_eq!(
            format!("{}\n", t.to_json()),
            std::fs::read_to_string(&truth).unwrap(),
            "{profile}: truth"
        );
    }
}
