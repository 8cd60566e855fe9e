//! End-to-end tests of the real binaries.

use std::path::Path;

use media_tests::TestCommand;

const TOOLS: [&str; 5] = [
    "import_synapse",
    "gdpr_export",
    "gdpr_import",
    "cleanmedia",
    "synupkeep",
];

/// The tools whose work is in subcommands, each with one of its leaf commands: the
/// logging flags are the leaf's.
const SUBCOMMAND_TOOLS: [(&str, &[&str]); 2] = [
    ("media_admin", &["datastores", "list"]),
    ("synapse_media", &["purge", "remote"]),
];

#[test]
fn every_tool_answers_help_and_version_under_its_final_name() {
    let dir = tempfile::tempdir().unwrap();
    for tool in TOOLS {
        let help = TestCommand::new(tool)
            .arg("--help")
            .current_dir(dir.path())
            .assert_exit(0);
        let text = String::from_utf8(help.stdout).unwrap();
        assert!(text.contains(&format!("Usage: {tool}")), "{tool}: {text}");
        assert!(
            text.contains("--quiet") && text.contains("--verbose"),
            "{tool}: {text}"
        );
        let version = TestCommand::new(tool)
            .arg("--version")
            .current_dir(dir.path())
            .assert_exit(0);
        assert!(String::from_utf8(version.stdout).unwrap().starts_with(tool));
    }
    for (tool, leaf) in SUBCOMMAND_TOOLS {
        let help = TestCommand::new(tool)
            .arg("--help")
            .current_dir(dir.path())
            .assert_exit(0);
        let text = String::from_utf8(help.stdout).unwrap();
        assert!(text.contains(&format!("Usage: {tool}")), "{tool}: {text}");
        let leaf_help = TestCommand::new(tool)
            .args(leaf)
            .arg("--help")
            .current_dir(dir.path())
            .assert_exit(0);
        let text = String::from_utf8(leaf_help.stdout).unwrap();
        assert!(
            text.contains("--quiet") && text.contains("--verbose"),
            "{tool} {leaf:?}: {text}"
        );
        let version = TestCommand::new(tool)
            .arg("--version")
            .current_dir(dir.path())
            .assert_exit(0);
        assert!(String::from_utf8(version.stdout).unwrap().starts_with(tool));
    }
}

#[test]
fn unknown_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for tool in TOOLS
        .into_iter()
        .chain(SUBCOMMAND_TOOLS.map(|(tool, _)| tool))
    {
        let out = TestCommand::new(tool)
            .arg("--no-such-flag")
            .current_dir(dir.path())
            .assert_exit(2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    }
}

/// Issue 19 item 11: with `--json`, an error that stopped the run left stdout empty, so a
/// script reading the report got nothing to parse.
#[test]
fn with_json_an_error_that_stops_a_run_is_a_json_object_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let runs: [(&str, Vec<&str>); 5] = [
        (
            "import_synapse",
            vec!["--synapse-db", missing, "--media-store", missing],
        ),
        (
            "gdpr_export",
            vec!["--entity", "example.org", "--repo-db", missing],
        ),
        ("gdpr_import", vec!["--directory", missing]),
        ("cleanmedia", vec!["-c", missing]),
        ("synupkeep", vec![missing, "token"]),
    ];
    for (tool, mut args) in runs {
        args.push("--json");
        let out = TestCommand::new(tool)
            .args(&args)
            .current_dir(dir.path())
            .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{tool}: stdout is not JSON ({e}); stderr: {stderr}"));
        assert_eq!(printed["error"]["class"], "usage", "{tool}: {printed}");
        let message = printed["error"]["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && stderr.contains(message),
            "{tool}: {printed}"
        );
    }
}

/// A Dendrite config whose relative media_api.base_path makes cleanmedia log a warning,
/// and whose media folder does not exist (the run then stops with exit code 2).
fn config_that_logs_a_warning(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("dendrite.yaml");
    std::fs::write(
        &config,
        "global:\n  server_name: example.org\n  database:\n    connection_string: \
         file:dendrite.db\nmedia_api:\n  base_path: ./no_media_here\n",
    )
    .unwrap();
    config
}

/// Issue 19 item 4: log lines carried ANSI colour codes in cron mail and journald.
#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_that_logs_a_warning(dir.path());
    let args = [
        "-c",
        config.to_str().unwrap(),
        "--workdir",
        dir.path().to_str().unwrap(),
    ];
    // stderr is a pipe here, as in cron or under systemd.
    let out = TestCommand::new("cleanmedia")
        .args(args)
        .current_dir(dir.path())
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relative"),
        "no warning was logged: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in piped stderr: {stderr:?}"
    );

    // On a terminal (a pseudo-terminal made by util-linux `script`), colour, unless
    // NO_COLOR is set.
    let command = format!(
        "{} -c {} --workdir {}",
        media_tests::binary("cleanmedia").display(),
        config.display(),
        dir.path().display()
    );
    let on_terminal = |no_color: Option<&str>| {
        let mut script = std::process::Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let out = script
            .output()
            .expect("util-linux `script` runs a pseudo-terminal");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("relative"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured:?}"
    );
    for no_color in ["1", "yes"] {
        let plain = on_terminal(Some(no_color));
        assert!(plain.contains("relative"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "NO_COLOR={no_color}: {plain:?}");
    }
}

/// A port of 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Runs a tool that must fail at once because its PostgreSQL cannot be reached: exit
/// code 2 (the database given is wrong) and the real cause, "refused", in the message.
fn assert_refused_at_once(tool: &str, args: &[&str], cwd: &std::path::Path, port: u16) {
    let started = std::time::Instant::now();
    let out = TestCommand::new(tool).args(args).current_dir(cwd).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A hang guard only (the pool used to retry for 15 s), not a timing measurement.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{tool} waited: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{tool}: {stderr}");
    assert!(
        stderr.to_lowercase().contains("refused"),
        "{tool}: {stderr}"
    );
    assert!(stderr.contains(&format!("port {port}")), "{tool}: {stderr}");
    assert!(!stderr.contains("timed out"), "{tool}: {stderr}");
}

/// Issue 19 item 5: a postgres:// URL to a port where nothing listens waited 15 s and said
/// "pool timed out", for Synapse's, Dendrite's and our databases alike.
#[test]
fn an_unreachable_postgres_is_reported_as_connection_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/media");
    let media_store = dir.path().join("media_store");
    std::fs::create_dir(&media_store).unwrap();
    let store = media_store.to_str().unwrap();
    // Synapse's database.
    assert_refused_at_once(
        "import_synapse",
        &["--synapse-db", &nowhere, "--media-store", store],
        dir.path(),
        port,
    );
    // Our repository (with Synapse's real media store, which passes the store check).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let synapse_db = fixture.join("homeserver.db");
    let synapse_store = fixture.join("media_store");
    assert_refused_at_once(
        "import_synapse",
        &[
            "--synapse-db",
            synapse_db.to_str().unwrap(),
            "--media-store",
            synapse_store.to_str().unwrap(),
            "--db",
            &nowhere,
        ],
        dir.path(),
        port,
    );
    // Dendrite's database.
    let config = dir.path().join("dendrite.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  server_name: example.org\n  database:\n    connection_string: \
             {nowhere}\nmedia_api:\n  base_path: {store}\n"
        ),
    )
    .unwrap();
    assert_refused_at_once(
        "cleanmedia",
        &["-c", config.to_str().unwrap(), "--fstab", "/dev/null"],
        dir.path(),
        port,
    );
}

/// Imports the SQLite Synapse fixture into the repository at `db` (any form `--db`
/// takes), from `cwd`, and returns the number of media imported.
fn import_fixture_into(db: &str, cwd: &Path) -> u64 {
    import_fixture_with("--db", db, cwd)
}

/// Like [`import_fixture_into`], naming the repository with `flag` (`--db` or its new
/// name `--repo-db`).
fn import_fixture_with(flag: &str, db: &str, cwd: &Path) -> u64 {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let datastore = cwd.join("datastore");
    let out = TestCommand::new("import_synapse")
        .arg("--synapse-db")
        .arg(fixture.join("homeserver.db"))
        .arg("--media-store")
        .arg(fixture.join("media_store"))
        .args([flag, db, "--datastore"])
        .arg(datastore)
        .arg("--json")
        .current_dir(cwd)
        .assert_exit_in(&[0, 1]);
    let report = media_tests::report(&out);
    report["media_imported"].as_u64().unwrap()
}

/// Issue 19 item 7: `--db /path/repo.db` was refused although `--synapse-db` and
/// `--datastore` took bare paths. Every form `--db` takes, end to end.
#[tokio::test]
async fn a_bare_path_is_accepted_by_db_like_every_other_database_flag() {
    use media_tests::TestDatabase;
    // SQLite: an absolute bare path, a relative bare path, a sqlite:// URL.
    for form in ["absolute", "relative", "url"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my repo.db");
        let db = match form {
            "absolute" => file.to_str().unwrap().to_owned(),
            "relative" => "my repo.db".to_owned(),
            _ => format!("sqlite://{}", file.display()),
        };
        let imported = import_fixture_into(&db, dir.path());
        assert!(imported > 0, "{form}");
        assert!(
            file.is_file(),
            "{form}: no SQLite file at {}",
            file.display()
        );
        // The bare path opens the same repository again: nothing new to import.
        assert_eq!(import_fixture_into(&db, dir.path()), 0, "{form}");
    }
    // PostgreSQL: a URL, and libpq key=value settings.
    let pg = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    assert!(import_fixture_into(&pg.url, dir.path()) > 0);
    let url = url_parts(&pg.url);
    let settings = format!(
        "host={} port={} user={} dbname={}",
        url.0, url.1, url.2, url.3
    );
    assert_eq!(import_fixture_into(&settings, dir.path()), 0, "{settings}");
}

/// (host, port, user, database) of a postgres:// URL.
fn url_parts(url: &str) -> (String, u16, String, String) {
    let rest = url.split_once("://").unwrap().1;
    let (authority, database) = rest.split_once('/').unwrap();
    let (user, host_port) = authority.rsplit_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let database = database.split('?').next().unwrap();
    (
        host.into(),
        port.parse().unwrap(),
        user.into(),
        database.into(),
    )
}

/// Issue 19 item 6: `-dbPassword` (and user and database names) with `@`, `/`, `#` or
/// `%` broke the URL assembled by string formatting. The test server trusts local
/// connections, so the password itself is checked where the URL is parsed (media-db's
/// `a_password_with_url_syntax_in_it_reaches_the_driver_exactly`); here the user and
/// database names, which must match exactly to connect at all.
#[tokio::test]
async fn db_flags_with_url_syntax_in_user_password_and_database_connect() {
    use sqlx::Connection;
    let admin = media_tests::postgres_server_url();
    let (host, port, _, _) = url_parts(&admin);
    let suffix = format!("{:08x}", rand::random::<u32>());
    let user = format!("med@ia/u#s%er {suffix}");
    let database = format!("syn apse/#%db {suffix}");
    let password = "p@ss/w#rd% :?x'";
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    for sql in [
        format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}'",
            quoted(&user),
            password.replace('\'', "''")
        ),
        format!(
            "CREATE DATABASE {} OWNER {}",
            quoted(&database),
            quoted(&user)
        ),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // Restore the Synapse fixture as that user (libpq's own quoting, not our code).
    let libpq_quoted =
        |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let synapse_settings = format!(
        "host={host} port={port} user={} password={} dbname={}",
        libpq_quoted(&user),
        libpq_quoted(password),
        libpq_quoted(&database)
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/postgres");
    let status = std::process::Command::new("psql")
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-d",
            &synapse_settings,
            "-f",
        ])
        .arg(fixture.join("synapse.sql"))
        .status()
        .unwrap();
    assert!(status.success(), "restoring the fixture as {user:?} failed");

    let dir = tempfile::tempdir().unwrap();
    let port = port.to_string();
    let out = TestCommand::new("import_synapse")
        .args([
            "-dbHost",
            &host,
            "-dbPort",
            &port,
            "-dbUsername",
            &user,
            "-dbPassword",
            password,
            "-dbName",
            &database,
            "--media-store",
            fixture.join("media_store").to_str().unwrap(),
            "--json",
        ])
        .current_dir(dir.path())
        .assert_exit_in(&[0, 1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = media_tests::report(&out);
    assert!(report["media_imported"].as_u64().unwrap() > 0, "{report}");
    assert!(
        !stderr.contains("w#rd"),
        "the password was printed: {stderr}"
    );

    for sql in [
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(&database)),
        format!("DROP ROLE IF EXISTS {}", quoted(&user)),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// `tool args…` → (exit code, stdout), asserting nothing was written to stderr on success.
fn stdout_of(tool: &str, args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let out = TestCommand::new(tool).args(args).current_dir(cwd).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() || stderr.is_empty(),
        "{tool} {args:?}: {stderr}"
    );
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

/// Issue 19 item 9: `--help` did not say which flags are required, nor show examples.
/// Every tool's short and long help show the usage line with its required flags, and
/// two or three example command lines of the tool.
#[test]
fn every_tools_help_shows_its_required_flags_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let usages: [(&str, &[&str]); 4] = [
        (
            "import_synapse",
            &[
                "Usage: import_synapse [OPTIONS] --synapse-db <SYNAPSE_DB> --media-store <MEDIA_STORE>",
                "import_synapse [OPTIONS] --db-host <DB_HOST>",
                "--source http --homeserver-url <URL> --access-token <TOKEN>",
            ],
        ),
        (
            "gdpr_export",
            &["Usage: gdpr_export [OPTIONS] --entity <ENTITY>"],
        ),
        ("gdpr_import", &["Usage: gdpr_import [OPTIONS]"]),
        ("cleanmedia", &["Usage: cleanmedia [OPTIONS]"]),
    ];
    for (tool, usage) in usages {
        for flag in ["-h", "--help"] {
            let (code, text) = stdout_of(tool, &[flag], dir.path());
            assert_eq!(code, Some(0), "{tool} {flag}");
            for line in usage {
                assert!(text.contains(line), "{tool} {flag}: no {line:?} in\n{text}");
            }
            let examples = text
                .split_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("{tool} {flag}: no examples in\n{text}"))
                .1;
            let commands = examples
                .lines()
                .filter(|line| line.starts_with(&format!("  {tool} ")))
                .count();
            assert!(
                (2..=3).contains(&commands),
                "{tool} {flag}: {commands} examples in\n{examples}"
            );
        }
    }
}

/// Issue 19 item 9: `gdpr_export --help` did not list the values `--compression` takes.
#[test]
fn gdpr_export_help_lists_the_compression_values() {
    let dir = tempfile::tempdir().unwrap();
    let (_, short) = stdout_of("gdpr_export", &["-h"], dir.path());
    assert!(
        short.contains("[possible values: auto, none, fast, best]"),
        "{short}"
    );
    // The long help says what each value does.
    let (_, long) = stdout_of("gdpr_export", &["--help"], dir.path());
    for value in ["- auto:", "- none:", "- fast:", "- best:"] {
        assert!(long.contains(value), "no {value:?} in\n{long}");
    }
    // A wrong value is a usage error that names the right ones.
    let out = TestCommand::new("gdpr_export")
        .args(["--entity", "example.org", "--compression", "gzip"])
        .current_dir(dir.path())
        .assert_exit(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gzip") && stderr.contains("auto, none, fast, best"),
        "{stderr}"
    );
}

/// Issue 19 item 9: our repository's `--db` sat among Synapse's `--db-host`, `--db-name`…
/// and read as one of them. It is `--repo-db` now, under its own heading, apart from the
/// Synapse flags; `--db` stays as an alias (`import_fixture_into` above uses it).
#[test]
fn our_repository_flags_cannot_be_mistaken_for_synapses() {
    let dir = tempfile::tempdir().unwrap();
    let (_, help) = stdout_of("import_synapse", &["-h"], dir.path());
    let (synapse, ours) = help
        .split_once("\nOur repository")
        .unwrap_or_else(|| panic!("no heading for our repository:\n{help}"));
    let synapse = synapse
        .split_once("\nSynapse (")
        .unwrap_or_else(|| panic!("no heading for Synapse's flags:\n{help}"))
        .1;
    for flag in ["--synapse-db", "--db-host", "--db-name", "--media-store"] {
        assert!(
            synapse.contains(flag),
            "{flag} is not under Synapse's heading"
        );
        assert!(!ours.contains(&format!("{flag} <")), "{flag} under ours");
    }
    let ours = ours.split("\n\n").next().unwrap();
    for flag in [
        "--repo-db <REPO_DB>",
        "[alias: --db]",
        "--datastore <DATASTORE>",
    ] {
        assert!(
            ours.contains(flag),
            "no {flag:?} under our heading:\n{ours}"
        );
    }

    // --repo-db and --db open the same repository: what one run imported, a run with the
    // other flag finds there.
    assert!(import_fixture_into("repo.db", dir.path()) > 0);
    assert_eq!(import_fixture_with("--repo-db", "repo.db", dir.path()), 0);
}

/// Issue 19 item 14: no shell completions nor man pages. Each tool prints them with
/// `--generate-completions SHELL` and `--generate-man` (as the README's install section
/// says), naming the tool and its flags, whatever the environment's variables hold
/// (the tools' required flags do not get in the way); the flags are not in `--help`.
#[test]
fn every_tool_generates_its_shell_completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    // Each tool with a flag its completions offer and what its man page must name: a
    // flag, or for the tools with subcommands, a subcommand.
    let flags = [
        ("import_synapse", "repo-db", "\\-\\-repo\\-db"),
        ("gdpr_export", "compression", "\\-\\-compression"),
        ("gdpr_import", "verify", "\\-\\-verify"),
        ("cleanmedia", "dryrun", "\\-\\-dryrun"),
        ("media_admin", "from-uri", "media_admin\\-datastores"),
        ("synapse_media", "older-than", "synapse_media\\-purge"),
    ];
    for (tool, flag, man_mention) in flags {
        for shell in ["bash", "zsh", "fish"] {
            let (code, script) = stdout_of(tool, &["--generate-completions", shell], dir.path());
            assert_eq!(code, Some(0), "{tool} {shell}");
            assert!(
                script.contains(tool) && script.contains(flag),
                "{tool} {shell} completions:\n{script}"
            );
        }
        // The bash script loads in a real bash and registers the tool's completion.
        let command = format!(
            "source <({} --generate-completions bash) && complete -p {tool}",
            media_tests::binary(tool).display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &command])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(tool),
            "{tool}: {out:?}"
        );

        let (code, man) = stdout_of(tool, &["--generate-man"], dir.path());
        assert_eq!(code, Some(0), "{tool} man");
        assert!(man.starts_with(".ie"), "{tool}: not roff:\n{man}");
        assert!(man.contains(&format!(".TH {tool} 1")), "{tool}:\n{man}");
        assert!(
            man.contains(man_mention),
            "{tool}: no {man_mention} in\n{man}"
        );

        // A required flag's variable set in the environment does not get in the way.
        let out = TestCommand::new(tool)
            .arg("--generate-man")
            .env("SYNAPSE_DB", "homeserver.db")
            .env("GDPR_ENTITY", "example.org")
            .current_dir(dir.path())
            .assert_exit(0);
        assert_eq!(String::from_utf8(out.stdout).unwrap(), man);

        // Another flag next to them is a usage error; they are not in --help.
        TestCommand::new(tool)
            .args(["--generate-man", "--json"])
            .current_dir(dir.path())
            .assert_exit(2);
        let (_, help) = stdout_of(tool, &["--help"], dir.path());
        assert!(!help.contains("--generate"), "{tool}:\n{help}");
    }
}

/// A reader that goes away before the report is written (`… --json | head`) ends the
/// run with its own exit code and no panic: the report's rest is dropped, as `cat` does.
#[test]
fn a_closed_stdout_drops_the_report_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("sqlite://{}", dir.path().join("repo.db").display());
    let store = dir.path().join("store");
    media_tests::import_sqlite_fixture(dir.path(), &repo, store.to_str().unwrap())
        .arg("-q")
        .assert_exit(1);
    let missing = dir.path().join("missing");
    let runs: [(&str, Vec<&str>, i32); 2] = [
        (
            "media_admin",
            vec!["datastores", "list", "--repo-db", &repo, "--json"],
            0,
        ),
        (
            "gdpr_import",
            vec!["--directory", missing.to_str().unwrap(), "--json"],
            2,
        ),
    ];
    for (tool, args, code) in runs {
        let mut child = std::process::Command::new(media_tests::binary(tool))
            .args(&args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end closes before the tool has written anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{tool}: {stderr}");
        assert_eq!(out.status.code(), Some(code), "{tool}: {stderr}");
    }
}
