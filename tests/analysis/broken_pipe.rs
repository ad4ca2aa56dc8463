//! A reader that stops early (`thoughtscope segment … --json | head -1`): the command ends
//! quietly with success instead of panicking on the broken pipe.

use std::process::{Command, Stdio};

#[test]
fn stdout_closed_before_the_first_line_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base_solution.json"), r#"{"full_cot": "P <think>\nA b c d e f. G h i j k l.</think>"}"#).unwrap();
    std::fs::write(tmp.path().join("chunks.json"), r#"{"chunks": ["A b c d e f.", "G h i j k l."]}"#).unwrap();
    // The pipe's read end is closed before the command starts, so its first write meets a
    // broken pipe whatever the timing (as `head` that has already exited).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [&["--json"][..], &[]] {
        let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
            .args(["segment", tmp.path().to_str().unwrap(), "--mode", "chunks"])
            .args(args)
            .env("THOUGHTSCOPE_PROGRESS", "off")
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .output()
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "segment {args:?}: {:?}, stderr: {stderr}", output.status);
        assert_eq!(stderr, "", "segment {args:?}: nothing on stderr");
    }
}
