//! The shipped `proxy.toml` and the binary's configuration handling.

use std::process::Command;

use memu_proxy::config::Settings;

const BIN: &str = env!("CARGO_BIN_EXE_memu-proxy");

fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap()
}

#[test]
fn the_shipped_proxy_toml_parses_and_validates() {
    let settings = Settings::from_toml(&shipped(), "proxy.toml").unwrap();
    let config = settings.validate().unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8100");
    assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:8000");
    assert_eq!(config.upstream.timeout.as_millis(), 2000);
    assert_eq!(config.cache.ttl.as_secs(), 300);
    assert_eq!(config.latency.budget.map(|b| b.as_millis()), Some(500));
    // Everything else in the shipped file is the built-in default, documented.
    let mut expected = Settings::default();
    expected.latency.budget_ms = 500;
    expected.cache.stale_while_revalidate_secs = 60;
    expected.cache.stale_if_error_secs = 3600;
    expected.cache.similarity_threshold = 0.9;
    expected.cache.local_answers = true;
    // PR #272 with memu-py 0.1.8 in front of the self-hosted server needs it (issue #10).
    expected.compat.fill_null_timestamps = true;
    assert_eq!(settings, expected);
}

#[test]
fn check_config_prints_the_effective_configuration_with_flags_applied() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args([
            "--check-config",
            "--timeout-ms",
            "750",
            "--write-timeout-ms",
            "45000",
            "--upstream",
            "http://127.0.0.1:9/memu",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("# no config file (none given, no ./proxy.toml): built-in defaults\n"),
        "says where the settings came from: {stdout}"
    );
    let printed = Settings::from_toml(&stdout, "stdout").unwrap();
    assert_eq!(printed.upstream.timeout_ms, 750);
    assert_eq!(printed.upstream.write_timeout_ms, 45_000);
    assert_eq!(printed.upstream.url, "http://127.0.0.1:9/memu");
}

#[test]
fn proxy_toml_in_the_working_directory_is_read() {
    let dir = tempdir();
    std::fs::write(dir.join("proxy.toml"), "[cache]\nttl_secs = 42\n").unwrap();
    let out = Command::new(BIN)
        .current_dir(&dir)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("# config file proxy.toml\n"), "{stdout}");
    assert!(stdout.contains("ttl_secs = 42"));
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .current_dir(&dir)
        .arg("--check-config")
        .env("MEMU_PROXY_UPSTREAM", "http://127.0.0.1:9/env")
        .env("MEMU_PROXY_BUDGET_MS", "250")
        .env("MEMU_PROXY_FILL_NULL_TIMESTAMPS", "true")
        .output()
        .unwrap();
    let printed = printed_settings(out);
    assert_eq!(printed.upstream.url, "http://127.0.0.1:9/env");
    assert_eq!(printed.latency.budget_ms, 250);
    assert!(printed.compat.fill_null_timestamps);
    // A flag wins over its variable.
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args(["--check-config", "--budget-ms", "300"])
        .env("MEMU_PROXY_BUDGET_MS", "250")
        .output()
        .unwrap();
    assert_eq!(printed_settings(out).latency.budget_ms, 300);
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "MEMU_PROXY_UPSTREAM",
        "MEMU_PROXY_LISTEN",
        "MEMU_PROXY_CONFIG",
        "MEMU_PROXY_LOG_FORMAT",
    ] {
        assert!(help.contains(var), "--help names {var}");
    }
}

#[test]
fn the_start_up_log_says_which_config_was_loaded_in_json_when_asked() {
    let dir = tempdir();
    std::fs::write(
        dir.join("proxy.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .args(["--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .next()
        .expect("a log line")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "config file proxy.toml");
}

#[test]
fn a_bad_config_names_the_key_and_exits_before_binding() {
    let dir = tempdir();
    // Port 0: were a bad config accepted, the proxy would bind harmlessly and be killed below.
    let any_port: &[&str] = &["--listen", "127.0.0.1:0"];
    let cases: &[(&str, &[&str], &str)] = &[
        ("[cache]\nttl_sec = 5\n", any_port, "ttl_sec"),
        (
            "[upstream]\ntimeout_ms = 0\n",
            any_port,
            "upstream.timeout_ms",
        ),
        ("[server]\nlisten = \"nowhere\"\n", &[], "server.listen"),
        (
            "",
            &["--listen", "127.0.0.1:0", "--upstream", "ftp://x"],
            "upstream.url",
        ),
        (
            "[upstream]\nwrite_timeout_ms = 600001\n",
            any_port,
            "upstream.write_timeout_ms",
        ),
        (
            "[upstream]\ntimeout_ms = \"fast\"\n",
            any_port,
            "timeout_ms",
        ),
    ];
    for (file, flags, key) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, file).unwrap();
        let out = output_within(
            Command::new(BIN).arg("--config").arg(&path).args(*flags),
            10,
        );
        assert_eq!(out.status.code(), Some(2), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
}

#[test]
fn an_unreadable_or_invalid_ca_file_stops_start_up_naming_the_key() {
    let dir = tempdir();
    let garbage = dir.join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing-ca.pem");
    for path in [&missing, &garbage] {
        let out = output_within(
            Command::new(BIN)
                .current_dir(&dir)
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--upstream",
                    "https://127.0.0.1:9",
                ])
                .arg("--upstream-ca-file")
                .arg(path),
            10,
        );
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("upstream.ca_file"), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    }

    let ca = rcgen::generate_simple_self_signed(["private-ca".to_owned()]).unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, ca.cert.pem()).unwrap();
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args(["--check-config", "--upstream", "https://memu.example"])
        .arg("--upstream-ca-file")
        .arg(&good)
        .output()
        .unwrap();
    let printed = printed_settings(out);
    assert_eq!(printed.upstream.url, "https://memu.example");
    assert_eq!(printed.upstream.ca_file, Some(good.display().to_string()));
}

#[test]
fn a_missing_config_file_is_an_error() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/proxy.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/proxy.toml"));
}

/// Runs `command`, killing it (and failing) if it has not exited within `secs`: a proxy that
/// accepted a bad config would be serving instead of exiting.
/// The settings a successful `--check-config` run printed.
fn printed_settings(out: std::process::Output) -> Settings {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Settings::from_toml(&String::from_utf8(out.stdout).unwrap(), "stdout").unwrap()
}

fn output_within(command: &mut Command, secs: u64) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > give_up {
            child.kill().unwrap();
            panic!("still running after {secs} s: the bad config was accepted");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "memu-proxy-config-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
