//! TLS to PostgreSQL: a throwaway cluster with a certificate of a test CA.
//! `sslmode=verify-full` with that CA as `sslrootcert` connects (and the
//! connection is encrypted); a different CA, or a certificate for another
//! name, is refused; `verify-ca` ignores the name; `require` checks nothing
//! but encrypts. Needs root, the server binaries and `openssl`; skipped
//! otherwise.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use crate::throwaway::Throwaway;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).stderr(std::process::Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "openssl {args:?}");
}

/// A CA (`{ca}.pem`), and a server certificate it signs for `names`
/// (`{server}.pem`, `{server}.key`, readable by the postgres user).
fn certificates(dir: &Path, ca: &str, server: &str, names: &str) {
    if !dir.join(format!("{ca}.pem")).exists() {
        let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={ca}"));
        let args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject];
        openssl(dir, &[&args[..], &["-keyout", &key, "-out", &pem]].concat());
    }
    let (key, csr, pem) = (format!("{server}.key"), format!("{server}.csr"), format!("{server}.pem"));
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=postgres"]);
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={names}\n")).unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "ext.cnf",
        ],
    );
    for file in [&key, &pem] {
        Command::new("chown").arg("postgres:postgres").arg(dir.join(file)).status().unwrap();
        Command::new("chmod").arg("600").arg(dir.join(file)).status().unwrap();
    }
}

async fn connects(url: &str) -> Result<bool, String> {
    let client = hookgate_postgres::connect_one(url).await.map_err(|e| e.to_string())?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    Ok(row.get::<_, bool>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_to_the_right_server_and_refuses_others() {
    if Command::new("openssl").arg("version").output().is_err() {
        hookgate_store::conformance::skip("no openssl here");
        return;
    }
    let Some(cluster) = Throwaway::create() else {
        hookgate_store::conformance::skip(
            "cannot make a throwaway PostgreSQL cluster here (needs root and the server binaries)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    Command::new("chmod").arg("755").arg(dir.path()).status().unwrap();
    let (d, ca) = (dir.path(), dir.path().join("ca.pem").display().to_string());
    certificates(d, "ca", "right", "IP:127.0.0.1,DNS:localhost");
    certificates(d, "other-ca", "other", "IP:127.0.0.1");
    certificates(d, "ca", "wrong-name", "DNS:db.example.com");
    // Before TLS is on: prefer (the default) goes on in plain text, and says so once, naming the server.
    let receiver = receiver(always_ok()).await;
    let config_dir = tempfile::tempdir().unwrap();
    let db = config_dir.path().join("unused.db");
    let config_at = |url: &str| {
        let text = config_text(&receiver.url(), &db, "").replace(&format!("sqlite://{}", db.display()), url);
        let config = config_dir.path().join("hookgate.toml");
        std::fs::write(&config, text).unwrap();
        config
    };
    let http = reqwest::Client::new();
    let log = config_dir.path().join("serve.log");
    let plain = Gateway::start_logging(&config_at(&cluster.url()), &log).healthy(&http).await;
    drop(plain);
    let logged = std::fs::read_to_string(&log).unwrap();
    let port = cluster.url().split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("without TLS")).collect();
    assert_eq!(warnings.len(), 1, "one WARN: {logged}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains(&format!("127.0.0.1:{port}")), "{logged}");

    let serve = |server: &str| {
        format!("ssl = on\nssl_cert_file = '{0}/{server}.pem'\nssl_key_file = '{0}/{server}.key'", d.display())
    };
    assert!(cluster.reconfigure(&serve("right")), "the cluster restarted with TLS");
    let url = cluster.url();
    let with = |query: String| format!("{url}?{query}");

    assert_eq!(connects(&with(format!("sslmode=verify-full&sslrootcert={ca}"))).await, Ok(true), "verified, encrypted");
    let other = d.join("other-ca.pem").display().to_string();
    let refused = connects(&with(format!("sslmode=verify-full&sslrootcert={other}"))).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    assert_eq!(connects(&with("sslmode=require".into())).await, Ok(true), "require: encrypted, unchecked");
    assert_eq!(connects(&with("sslmode=disable".into())).await, Ok(false));
    assert_eq!(connects(&url).await, Ok(true), "prefer (the default) takes TLS when offered");

    // `serve` itself, verify-full: it starts, and is ready (and prefer, with TLS offered, says nothing).
    let verified = with(format!("sslmode=verify-full&sslrootcert={ca}"));
    let gateway = Gateway::start(&config_at(&verified)).healthy(&http).await;
    let ready = http.get(format!("{}/readyz", gateway.base)).send().await.unwrap().status();
    assert_eq!(ready, 200);
    drop(gateway);
    let preferred = Gateway::start_logging(&config_at(&url), &log).healthy(&http).await;
    drop(preferred);
    assert!(!std::fs::read_to_string(&log).unwrap().contains("without TLS"), "TLS was offered and taken");

    // What `serve` says when it cannot connect names the cause: the issuer nobody trusts.
    let untrusted = with(format!("sslmode=verify-full&sslrootcert={other}"));
    let error = hookgate_postgres::PostgresStore::connect(&untrusted, 2).await.err().unwrap().to_string();
    assert!(error.contains("invalid peer certificate: UnknownIssuer"), "{error}");

    // A certificate for another name: verify-full refuses it, verify-ca does not look at names.
    assert!(cluster.reconfigure(&serve("wrong-name")));
    let refused = connects(&with(format!("sslmode=verify-full&sslrootcert={ca}"))).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    let error = hookgate_postgres::PostgresStore::connect(&with(format!("sslmode=verify-full&sslrootcert={ca}")), 2)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(r#"certificate not valid for name "127.0.0.1""#), "names the failure: {error}");
    assert_eq!(connects(&with(format!("sslmode=verify-ca&sslrootcert={ca}"))).await, Ok(true));
}
