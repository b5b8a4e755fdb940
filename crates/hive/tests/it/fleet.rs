//! A lab of hives on one real etcd (Debian's `etcd-server`), each with its own
//! home, on loopback: membership under leases, requests routed to the hive that
//! has the model or the room, the fleet token between hives, a hive that dies
//! dropping out, and etcd going away and coming back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::engines::{llama_server, smollm2_on_llama};
use crate::workers::{hive, import};
use crate::{Hive, client, enc, get, post, python_script, wait_for, workers_of};

use hf_test_server::test_model as smollm2;

/// A real etcd on free loopback ports, its data in a temporary folder; killed when
/// dropped.
struct Etcd {
    child: Child,
    url: String,
    peer_port: u16,
    client_port: u16,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `etcd` binary, or `None` to skip; with `RBEE_REQUIRE_ETCD_TESTS=1` (as CI
/// sets) a missing one fails the test.
fn etcd_binary() -> Option<PathBuf> {
    let found = which::which("etcd").ok();
    if found.is_none() {
        assert!(
            std::env::var_os("RBEE_REQUIRE_ETCD_TESTS").is_none(),
            "etcd not found (apt install etcd-server)"
        );
        eprintln!("skipped: no etcd (apt install etcd-server)");
    }
    found
}

impl Etcd {
    async fn start(dir: &Path) -> Option<Self> {
        let binary = etcd_binary()?;
        let (client_port, peer_port) = (free_port(), free_port());
        let mut e = Self {
            child: Self::spawn(&binary, dir, client_port, peer_port),
            url: format!("http://127.0.0.1:{client_port}"),
            peer_port,
            client_port,
            dir: dir.to_path_buf(),
        };
        e.wait_healthy().await;
        Some(e)
    }

    fn spawn(binary: &Path, dir: &Path, client_port: u16, peer_port: u16) -> Child {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        Command::new(binary)
            .args(["--name", "lab", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("lab={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn wait_healthy(&mut self) {
        let health = format!("{}/health", self.url);
        wait_for("etcd to be healthy", async || {
            client()
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and data.
    async fn restart(&mut self) {
        let binary = etcd_binary().unwrap();
        self.child = Self::spawn(&binary, &self.dir, self.client_port, self.peer_port);
        self.wait_healthy().await;
    }
}

/// A hive of the fleet: its own home, the lab's etcd, a short lease (2 s) unless
/// `extra` says.
fn member(home: &Path, etcd: &Etcd, extra: &[&str]) -> Hive {
    let mut args = vec!["--etcd", etcd.url.as_str(), "--fleet", "lab"];
    if !extra.contains(&"--fleet-ttl-secs") {
        args.extend(["--fleet-ttl-secs", "2"]);
    }
    args.extend_from_slice(extra);
    hive(home, &args)
}

async fn fleet_of(h: &Hive) -> Value {
    let (status, v) = get(h, "/v1/fleet").await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn hive_id(h: &Hive) -> String {
    let mut id = String::new();
    wait_for("the hive to join its fleet", async || {
        let v = fleet_of(h).await;
        if v["link"]["state"] == "joined" {
            id = v["hive_id"].as_str().unwrap().to_owned();
            true
        } else {
            false
        }
    })
    .await;
    id
}

/// Waits until `h` sees a peer whose card satisfies `ok`.
async fn until_seen(h: &Hive, what: &str, ok: impl Fn(&Value) -> bool) {
    wait_for(what, async || {
        fleet_of(h).await["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["self"] == false && ok(c))
    })
    .await;
}

fn python() -> Option<PathBuf> {
    crate::python_with("openai, anthropic, ollama")
}

/// Three hives on one etcd, SmolLM2 in B's catalog alone: the official `openai`,
/// `anthropic` and `ollama` clients at A get B's answer, streamed, the same greedy text as B
/// gives itself; C, which has nothing, is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_at_one_hive_get_the_answer_of_the_hive_that_has_the_model() {
    let (Some(server), Some(model), Some(python)) = (llama_server(), smollm2(), python()) else {
        return;
    };
    let lab = tempfile::tempdir().unwrap();
    let Some(etcd) = Etcd::start(lab.path()).await else {
        return;
    };
    let (ha, hb, hc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = member(ha.path(), &etcd, &[]);
    let mut b = member(hb.path(), &etcd, &[]);
    let c = member(hc.path(), &etcd, &[]);
    let id = smollm2_on_llama(&b, hb.path(), &server, &model).await;
    // one slot: greedy text is then the same from request to request
    let (s, v) = crate::patch(&b, &format!("/v1/models/{}", enc(&id)), json!({"slots": 1})).await;
    assert_eq!(s, 200, "{v}");
    let b_id = hive_id(&b).await;
    hive_id(&c).await;
    let (_, m) = get(&b, &format!("/v1/models/{}", enc(&id))).await;
    let real_alias = m["alias"].as_str().unwrap().to_owned();
    assert!(real_alias.starts_with("smollm2"), "{m}");
    until_seen(&a, "A to see B's model", |card| {
        card["id"] == b_id.as_str()
            && card["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["alias"] == real_alias.as_str())
    })
    .await;

    let at_a = python_script(&python, "fleet_clients.py", &[&a.url, &real_alias]).await;
    assert_eq!(at_a["openai_hive"], b_id.as_str(), "{at_a}");
    assert!(
        at_a["openai_models"]
            .as_array()
            .unwrap()
            .contains(&json!(real_alias)),
        "{at_a}"
    );
    // the catalog's list has the peers' models only when asked
    let (_, own) = get(&a, "/v1/models").await;
    assert_eq!(own["data"], json!([]), "{own}");
    let (_, all) = get(&a, "/v1/models?fleet=true").await;
    assert_eq!(all["data"][0]["hive"], b_id.as_str(), "{all}");
    assert_eq!(all["data"][0]["alias"], real_alias.as_str(), "{all}");
    assert!(at_a["openai_stream_chunks"].as_u64().unwrap() > 1, "{at_a}");
    assert!(at_a["ollama_stream_chunks"].as_u64().unwrap() > 1, "{at_a}");
    // the same clients at B itself: the same greedy words
    let at_b = python_script(&python, "fleet_clients.py", &[&b.url, &real_alias]).await;
    assert_eq!(
        at_b["openai_hive"],
        Value::Null,
        "B answered itself: {at_b}"
    );
    assert!(
        at_a["anthropic_stream_events"].as_u64().unwrap() > 3,
        "{at_a}"
    );
    for k in [
        "openai_chat",
        "openai_stream",
        "ollama_stream",
        "anthropic_stream",
    ] {
        assert!(!at_a[k].as_str().unwrap().is_empty(), "{k}: {at_a}");
        assert_eq!(at_a[k], at_b[k], "{k}");
    }
    // only B ran a worker; A and C loaded nothing
    assert_eq!(
        (
            workers_of(&a).await,
            workers_of(&b).await,
            workers_of(&c).await
        ),
        (0, 1, 0)
    );
    // A counted what it sent, by peer
    let metrics = crate::get_text(&a, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "rbee_fleet_forwarded_total{{peer=\"{b_id}\",outcome=\"answered\"}} 4"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("rbee_fleet_peer_latency_seconds_count"),
        "{metrics}"
    );
    // A's card says it has nothing; B's that it has the model loaded
    let fleet = fleet_of(&c).await;
    let cards = fleet["data"].as_array().unwrap();
    assert_eq!(cards.len(), 3, "{fleet}");
    wait_for("B's card to say the model is loaded", async || {
        fleet_of(&a).await["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == b_id.as_str() && c["loaded"].as_array().unwrap().len() == 1)
    })
    .await;
    // the CLI at A: the three hives, and the model on B, loaded there
    let (ok, out) = rbee(&a, &["fleet", "ls"]);
    assert!(ok, "{out}");
    assert!(out.contains("(this hive)") && out.contains(&b_id), "{out}");
    assert!(out.contains("slot(s) free"), "{out}");
    let (ok, out) = rbee(&a, &["fleet", "models", "--json"]);
    assert!(ok, "{out}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let rows = rows["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["hive"], b_id.as_str());
    assert_eq!(rows[0]["alias"], real_alias.as_str());
    assert_eq!(rows[0]["loaded"], true);

    // B dies in the middle of a stream A passes on: the stream ends with an error
    // event that says so, as a dying local worker's does
    let mut r = client()
        .post(format!("{}/v1/completions", a.url))
        .json(
            &json!({"model": real_alias, "prompt": "Once upon a time", "max_tokens": 30000,
            "ignore_eos": true, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rbee-hive"], b_id.as_str());
    let mut seen = String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()).into_owned();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    while let Ok(Some(chunk)) = r.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("stopped answering"),
        "{}",
        &seen[seen.len().saturating_sub(400)..]
    );
}

/// The `rbee` command line built beside the daemon, against hive `h`: whether it
/// succeeded, and its stdout (its stderr after, when it failed).
fn rbee(h: &Hive, args: &[&str]) -> (bool, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rbee-hive")).with_file_name("rbee");
    let out = Command::new(bin)
        .args(args)
        .env("RBEE_HIVE_URL", &h.url)
        .env_remove("RBEE_API_TOKEN")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

/// A's budget is too small for the model, B's and C's are large enough, B's the
/// larger: a request at A would go to B first, but B was just killed (its card
/// still on etcd, under a long lease), so A tries C, which loads the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hive_without_room_sends_the_request_to_one_with_room_past_a_dead_one() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let lab = tempfile::tempdir().unwrap();
    let Some(etcd) = Etcd::start(lab.path()).await else {
        return;
    };
    let (ha, hb, hc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = member(ha.path(), &etcd, &["--ram-budget-bytes", "1048576"]);
    let mut b = member(
        hb.path(),
        &etcd,
        &["--ram-budget-bytes", "2147483648", "--fleet-ttl-secs", "60"],
    );
    let c = member(hc.path(), &etcd, &["--ram-budget-bytes", "1073741824"]);
    let at_a = smollm2_on_llama(&a, ha.path(), &server, &model).await;
    smollm2_on_llama(&b, hb.path(), &server, &model).await;
    smollm2_on_llama(&c, hc.path(), &server, &model).await;
    let b_id = hive_id(&b).await;
    let c_id = hive_id(&c).await;
    hive_id(&a).await;
    for peer in [&b_id, &c_id] {
        until_seen(&a, "A to see the model and room of B and C", |card| {
            card["id"] == peer.as_str() && !card["models"].as_array().unwrap().is_empty()
        })
        .await;
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let r = client()
        .post(format!("{}/v1/chat/completions", a.url))
        .json(&json!({"model": at_a, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rbee-hive"], c_id.as_str());
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!((workers_of(&a).await, workers_of(&c).await), (0, 1));
    // B was tried first and did not answer
    let metrics = crate::get_text(&a, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "rbee_fleet_forwarded_total{{peer=\"{b_id}\",outcome=\"unreachable\"}} 1"
        )),
        "{metrics}"
    );
}

/// A reference no hive has: the hive with the most room pulls it, through the lab's
/// mirror, loads it and answers; A, too small, asked for it. The hub sends nothing
/// after the mirror was filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_nobody_has_is_pulled_through_the_mirror_by_the_hive_with_the_most_room() {
    use hf_test_server::registry::Registry;
    use hf_test_server::{HfServer, Repo, RepoFile};
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let lab = tempfile::tempdir().unwrap();
    let Some(etcd) = Etcd::start(lab.path()).await else {
        return;
    };
    let hf = HfServer::start(
        vec![Repo::new(
            "TheOrg/SmolLM2-GGUF",
            vec![RepoFile::lfs(
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                fs_err::read(&model).unwrap(),
            )],
        )],
        None,
        false,
    )
    .await;
    let mirror = format!("oci://{}/mirror/hf", registry.host);
    let reference = "hf:TheOrg/SmolLM2-GGUF";
    // a first hive, in no fleet, fills the mirror
    let seeder_home = tempfile::tempdir().unwrap();
    let seeder = crate::start(
        seeder_home.path(),
        &hf.url(),
        &["--oci-insecure", &registry.host, "--model-mirror", &mirror],
    );
    let (s, job) = post(
        &seeder,
        "/v1/models/download",
        json!({"model_ref": reference}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (state, _, ev) = crate::workers::finish(&seeder, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    let tags = format!(
        "http://{}/v2/mirror/hf/theorg/smollm2-gguf/tags/list",
        registry.host
    );
    wait_for("the copy in the mirror", async || {
        let r = reqwest::get(&tags).await.unwrap();
        r.status().is_success()
            && r.json::<Value>().await.unwrap()["tags"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
    })
    .await;
    let from_hub = hf.bytes_sent();

    let (ha, hc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lab_flags = |budget: &'static str| {
        vec![
            "--etcd".to_owned(),
            etcd.url.clone(),
            "--fleet".into(),
            "lab".into(),
            "--ram-budget-bytes".into(),
            budget.into(),
            "--oci-insecure".into(),
            registry.host.clone(),
            "--model-mirror".into(),
            mirror.clone(),
        ]
    };
    let flags_a = lab_flags("1048576");
    let flags_c = lab_flags("2147483648");
    let a = crate::start(
        ha.path(),
        &hf.url(),
        &flags_a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = crate::start(
        hc.path(),
        &hf.url(),
        &flags_c.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    crate::engines::add(&c, &server, "cpu").await;
    let c_id = hive_id(&c).await;
    hive_id(&a).await;
    until_seen(&a, "A to see C's room", |card| {
        card["id"] == c_id.as_str()
            && card["devices"][0]["free_bytes"].as_u64().unwrap_or(0) > (1 << 30)
    })
    .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", a.url))
        .json(&json!({"model": reference, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rbee-hive"], c_id.as_str());
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    // C has it now, from the mirror; A pulled nothing; the hub sent nothing more
    assert_eq!(crate::model_list(&c).await.as_array().unwrap().len(), 1);
    assert_eq!(get(&a, "/v1/models").await.1["data"], json!([]));
    assert_eq!(hf.bytes_sent(), from_hub);
}

/// Between hives the fleet token is required; a request that came from a peer is
/// never sent on; a hive killed with SIGKILL drops out when its lease expires and
/// is never routed to after; etcd gone, a hive says so and serves its own models,
/// and joins again by itself when etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_the_token_a_dead_hive_drops_out_and_etcd_can_come_and_go() {
    let Some(model) = smollm2() else { return };
    let lab = tempfile::tempdir().unwrap();
    let Some(mut etcd) = Etcd::start(lab.path()).await else {
        return;
    };
    let token = lab.path().join("fleet-token");
    fs_err::write(&token, "lab-secret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let token = token.to_str().unwrap();
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = member(ha.path(), &etcd, &["--fleet-token-file", token]);
    let mut b = member(hb.path(), &etcd, &["--fleet-token-file", token]);
    let local = hb.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let id = import(&b, &local).await;
    let b_id = hive_id(&b).await;
    let a_id = hive_id(&a).await;
    // the id is kept across restarts, in the home
    assert_eq!(
        fs_err::read_to_string(ha.path().join("hive-id"))
            .unwrap()
            .trim(),
        a_id
    );
    until_seen(&a, "A to see B's model", |card| {
        card["id"] == b_id.as_str() && !card["models"].as_array().unwrap().is_empty()
    })
    .await;

    // a request as from a peer, without the token or with a wrong one: refused
    let body =
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    for wrong in [None, Some("guess")] {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", b.url))
            .header("x-rbee-hop", "intruder")
            .json(&body);
        if let Some(t) = wrong {
            r = r.header("x-rbee-fleet-token", t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains("fleet"),
            "{v}"
        );
    }
    // with the token, a request that came from a peer is not sent on: A lacks the
    // model and answers 404 itself, though B has it
    let r = client()
        .post(format!("{}/v1/chat/completions", a.url))
        .header("x-rbee-hop", b_id.as_str())
        .header("x-rbee-fleet-token", "lab-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("x-rbee-hive").is_none());

    // the fleet token lets a peer ask a model, and nothing else of a hive with an
    // API token
    let hd = tempfile::tempdir().unwrap();
    let guarded = member(
        hd.path(),
        &etcd,
        &["--fleet-token-file", token, "--api-token", "own-secret"],
    );
    let as_peer = |r: reqwest::RequestBuilder| {
        r.header("x-rbee-hop", "a-peer")
            .header("x-rbee-fleet-token", "lab-secret")
    };
    let r = as_peer(client().get(format!("{}/v1/workers", guarded.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = as_peer(client().delete(format!("{}/v1/models/{}", guarded.url, enc(&id))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // nor may it make models, name them or pair projectors
    for path in ["/api/create", "/api/copy", "/v1/models/mmproj"] {
        let r = as_peer(client().post(format!("{}{path}", guarded.url)))
            .json(&json!({"model": "made:1", "from": id, "source": id, "destination": "copy:1", "id": id, "path": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = as_peer(client().post(format!("{}/v1/chat/completions", guarded.url)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a peer asks a model it lacks: not a 401");
    drop(guarded);

    // a hive of the fleet with another token is refused by B, and serves the
    // request itself (a 404 here), never passing B's 401 on
    let other_token = lab.path().join("other-token");
    fs_err::write(&other_token, "not-the-lab's\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(&other_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let hs = tempfile::tempdir().unwrap();
    let stranger = member(
        hs.path(),
        &etcd,
        &["--fleet-token-file", other_token.to_str().unwrap()],
    );
    hive_id(&stranger).await;
    until_seen(&stranger, "the stranger to see B's model", |card| {
        card["id"] == b_id.as_str() && !card["models"].as_array().unwrap().is_empty()
    })
    .await;
    let (status, v) = post(&stranger, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 404, "{v}");
    let metrics = crate::get_text(&stranger, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "rbee_fleet_forwarded_total{{peer=\"{b_id}\",outcome=\"refused\"}} 1"
        )),
        "{metrics}"
    );
    drop(stranger);

    // B dies without a word: its lease expires, and A forgets it
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    wait_for("B to drop out of A's view", async || {
        !fleet_of(&a).await["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == b_id.as_str())
    })
    .await;
    let (status, v) = post(&a, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 404, "{v}");

    // etcd goes away: A says so, and still serves its own API
    etcd.stop();
    wait_for("A to notice etcd is gone", async || {
        get(&a, "/health").await.1["fleet"]["state"] == "unreachable"
    })
    .await;
    let (status, v) = get(&a, "/v1/fleet").await;
    assert_eq!(status, 200);
    assert!(
        v["link"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    let (ok, out) = rbee(&a, &["hive", "status"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("fleet       lab as") && out.contains("unreachable"),
        "{out}"
    );
    assert_eq!(get(&a, "/v1/models").await.0, 200);
    // etcd back: A joins again by itself
    etcd.restart().await;
    wait_for("A to join again", async || {
        get(&a, "/health").await.1["fleet"]["state"] == "joined"
    })
    .await;
}

/// A hive in no fleet says so, to the API and the CLI.
#[tokio::test]
async fn a_hive_in_no_fleet_says_so() {
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let (status, v) = get(&h, "/v1/fleet").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "no_fleet", "{v}");
    assert!(get(&h, "/health").await.1.get("fleet").is_none());
    let (ok, out) = rbee(&h, &["fleet", "ls"]);
    assert!(!ok);
    assert!(out.contains("--etcd"), "{out}");
}

/// What the fleet can send a hive that it must not believe: an etcd that does not
/// answer at start (the hive serves alone and says so), a second hive under one
/// id (it does not join, and names the first's URL), a peer that answers garbage
/// (a 502 that names it, in the route family's shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_etcd_a_copied_id_and_a_garbling_peer_are_said_and_change_nothing() {
    let lab = tempfile::tempdir().unwrap();
    // no etcd at all: the hive starts, serves, and says so
    let home = tempfile::tempdir().unwrap();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let alone = hive(home.path(), &["--etcd", &nowhere, "--fleet-ttl-secs", "2"]);
    wait_for("the hive to say etcd is unreachable", async || {
        get(&alone, "/health").await.1["fleet"]["state"] == "unreachable"
    })
    .await;
    assert_eq!(get(&alone, "/v1/models").await.0, 200);
    drop(alone);

    let Some(etcd) = Etcd::start(lab.path()).await else {
        return;
    };
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = member(ha.path(), &etcd, &[]);
    let a_id = hive_id(&a).await;
    // B's home has A's id (a copied home): B does not join over A
    fs_err::write(hb.path().join("hive-id"), format!("{a_id}\n")).unwrap();
    let b = member(hb.path(), &etcd, &[]);
    wait_for("B to refuse A's id", async || {
        fleet_of(&b).await["link"]["state"] == "refused"
    })
    .await;
    let v = fleet_of(&b).await;
    assert!(
        v["link"]["reason"].as_str().unwrap().contains(&a.url),
        "{v}"
    );
    assert_eq!(fleet_of(&a).await["link"]["state"], "joined");

    // a peer that answers what is not HTTP, for a model only it has
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = garbage.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"SSH-2.0-not-a-hive\r\n\x00\x01garbage")
                .await;
        }
    });
    let card = json!({"id": "liar-1", "url": garbage_url, "version": "0", "loaded": [],
        "devices": [{"name": "RAM", "budget_bytes": 1u64 << 40, "free_bytes": 1u64 << 40}],
        "models": [{"id": "hf:x/ghost/ghost.gguf", "alias": "ghost:q4", "size": 1,
            "kind": "generation", "needs_bytes": 1, "device": "RAM"}]});
    put_raw(&etcd, "/rbee/lab/hives/liar-1", &card.to_string()).await;
    until_seen(&a, "A to see the liar", |c| c["id"] == "liar-1").await;
    let (status, v) = post(
        &a,
        "/v1/chat/completions",
        json!({"model": "ghost:q4", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "peer_failed", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("liar-1"),
        "{v}"
    );
    let (status, v) = post(
        &a,
        "/api/chat",
        json!({"model": "ghost:q4", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert!(v["error"].as_str().unwrap().contains("liar-1"), "{v}");
    // nothing changed at A
    assert_eq!(workers_of(&a).await, 0);
    assert_eq!(get(&a, "/v1/models").await.1["data"], json!([]));
}

/// Writes `value` at `key` through etcd's own JSON gateway, as another program
/// with write access to the fleet's prefix could.
async fn put_raw(etcd: &Etcd, key: &str, value: &str) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let r = client()
        .post(format!("{}/v3/kv/put", etcd.url))
        .json(&json!({"key": b64(key), "value": b64(value)}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Bad fleet settings are refused at start with a clear word.
#[test]
fn bad_fleet_settings_are_refused_at_start() {
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--etcd", "ftp://x:1"], "--etcd"),
        (
            vec!["--etcd", "http://127.0.0.1:1", "--fleet", "a/b"],
            "fleet name",
        ),
        (
            vec!["--etcd", "http://127.0.0.1:1", "--fleet-ttl-secs", "1"],
            "fleet-ttl-secs",
        ),
        // an API token, and no token for the peers
        (
            vec!["--etcd", "http://127.0.0.1:1", "--api-token", "t"],
            "--fleet-token-file",
        ),
    ] {
        let out = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
