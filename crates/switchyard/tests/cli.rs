//! Black-box: `switchyard check-config` and the refusals of `switchyard serve`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Gateway, TempDir, chat_body, run_cli, send};
use tokio::io::{AsyncBufReadExt, BufReader};

const GOOD: &str = r#"[server]
address = "127.0.0.1:8420"          # default
max_body_bytes = 33554432

[auth]
master_key = "${SWITCHYARD_TEST_MASTER_KEY}"   # ${VAR} and ${VAR:-default} expand from the environment
require_auth = true                 # default: true when a master key is set

[providers.up1]
kind = "openai"                     # any OpenAI-compatible API
base_url = "http://127.0.0.1:9001/v1"
api_key = "${UP1_KEY_SURELY_UNSET:-}"
timeout_ms = 600000                 # whole-request ceiling; connect and idle-read timeouts too

[models.gpt-mock]                   # the public model name clients send
provider = "up1"
model = "mock-ok"                   # the name sent upstream (default: the public name)
"#;

fn check(path: &Path) -> (bool, String, String) {
    run_cli(
        &[OsStr::new("check-config"), path.as_os_str()],
        &[("SWITCHYARD_TEST_MASTER_KEY", "sk-from-env")],
    )
}

/// `check-config` refuses `text`: non-zero exit, and stderr names `file:line` and gives a hint.
fn assert_refused(text: &str, line: usize, mentions: &str) {
    let dir = TempDir::new();
    let path = dir.write("bad.toml", text);
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok, "accepted:\n{text}\nstdout: {stdout}");
    let at = format!("{}:{line}", path.display());
    assert!(stderr.contains(&at), "stderr lacks `{at}`:\n{stderr}");
    assert!(stderr.contains("hint:"), "stderr lacks a hint:\n{stderr}");
    assert!(stderr.contains(mentions), "stderr lacks `{mentions}`:\n{stderr}");
}

#[test]
fn check_config_accepts_the_documented_shape() {
    let dir = TempDir::new();
    let path = dir.write("good.toml", GOOD);
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn check_config_refuses_an_unknown_key() {
    assert_refused(
        &GOOD.replace("timeout_ms = 600000", "timeout_msec = 600000"),
        13,
        "timeout_msec",
    );
    assert_refused("[server]\nadress = \"127.0.0.1:1\"\n", 2, "adress");
    assert_refused("[servre]\naddress = \"127.0.0.1:1\"\n", 1, "servre");
}

#[test]
fn check_config_refuses_a_missing_provider() {
    assert_refused(
        &GOOD.replace("provider = \"up1\"", "provider = \"up2\""),
        16,
        "up2",
    );
}

#[test]
fn check_config_refuses_a_bad_url() {
    assert_refused(
        &GOOD.replace("http://127.0.0.1:9001/v1", "127.0.0.1:9001/v1"),
        11,
        "base_url",
    );
    assert_refused(
        &GOOD.replace("http://127.0.0.1:9001/v1", "ftp://127.0.0.1/v1"),
        11,
        "base_url",
    );
}

#[test]
fn check_config_refuses_an_unset_variable_without_default() {
    assert_refused(
        &GOOD.replace("${UP1_KEY_SURELY_UNSET:-}", "${UP1_KEY_SURELY_UNSET}"),
        12,
        "UP1_KEY_SURELY_UNSET",
    );
}

#[test]
fn check_config_refuses_an_unreadable_file() {
    let dir = TempDir::new();
    let (ok, _, stderr) = check(&dir.0.join("missing.toml"));
    assert!(!ok);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

fn open_config(extra_auth: &str) -> String {
    format!(
        "[server]\naddress = \"0.0.0.0:0\"\n\n[auth]\n{extra_auth}\n[providers.up1]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[models.gpt-mock]\nprovider = \"up1\"\n"
    )
}

#[tokio::test]
async fn serve_on_a_public_address_without_a_key_refuses_to_start() {
    let dir = TempDir::new();
    let path = dir.write("open.toml", &open_config(""));
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(common::bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("SWITCHYARD_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("serve exits instead of starting")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("require_auth"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it started anyway"
    );
    // check-config says the same.
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(stderr.contains("require_auth"), "{stderr}");
}

#[tokio::test]
async fn serve_on_a_public_address_starts_when_require_auth_is_false() {
    let dir = TempDir::new();
    let path = dir.write("open.toml", &open_config("require_auth = false\n"));
    let mut child = tokio::process::Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("it starts")
        .unwrap()
        .unwrap_or_default();
    assert!(line.contains("listening on http://0.0.0.0:"), "{line}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn serve_expands_environment_variables_in_the_config() {
    let mock = mock_upstream::MockServer::start().await.unwrap();
    let config = concat!(
        "[server]\naddress = \"${SY_TEST_ADDR:-127.0.0.1:0}\"\n\n",
        "[auth]\nmaster_key = \"${SY_TEST_KEY}\"\n\n",
        "[providers.up]\nkind = \"openai\"\nbase_url = \"${SY_TEST_UPSTREAM}/v1\"\n\n",
        "[models.gpt-env]\nprovider = \"up\"\nmodel = \"mock-ok\"\n",
    );
    let upstream = mock.base_url();
    let gw = Gateway::start_with_env(
        config,
        &[("SY_TEST_KEY", "sk-env-key"), ("SY_TEST_UPSTREAM", &upstream)],
    )
    .await;
    let (status, _, body) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-env-key")
            .json(&chat_body("gpt-env", "hi")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
}
