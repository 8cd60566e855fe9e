//! End-to-end tests of the real binaries.

use media_tests::run;

const TOOLS: [&str; 4] = ["import_synapse", "gdpr_export", "gdpr_import", "cleanmedia"];

#[test]
fn every_tool_answers_help_and_version_under_its_final_name() {
    let dir = tempfile::tempdir().unwrap();
    for tool in TOOLS {
        let help = run(tool, &["--help"], dir.path());
        assert!(help.status.success(), "{tool} --help failed");
        let text = String::from_utf8(help.stdout).unwrap();
        assert!(text.contains(&format!("Usage: {tool}")), "{tool}: {text}");
        assert!(
            text.contains("--quiet") && text.contains("--verbose"),
            "{tool}: {text}"
        );
        let version = run(tool, &["--version"], dir.path());
        assert!(version.status.success());
        assert!(String::from_utf8(version.stdout).unwrap().starts_with(tool));
    }
}

#[test]
fn unknown_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for tool in TOOLS {
        let out = run(tool, &["--no-such-flag"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{tool}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    }
}
