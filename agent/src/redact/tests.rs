use std::time::{Duration, Instant};

use super::*;
use crate::{
    config::RunConfig,
    process::{ProcessInfo, ProcessTable},
};

fn builtin() -> Redactor {
    Redactor::builtin().expect("the built-in rules compile")
}

fn with(flags: &[&str]) -> Redactor {
    let config = RunConfig::from_flags(flags).expect("valid flags");
    Redactor::new(config.redaction.args, &config.redaction.patterns)
        .expect("the built-in rules compile")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `argv` redacted by `redactor` is `want`, and redacting that again changes nothing.
#[track_caller]
fn check(redactor: &Redactor, argv: &[&str], want: &[&str]) {
    let mut args = strings(argv);
    let changed = redactor.redact(&mut args);
    assert_eq!(args, want, "redacting {argv:?}");
    assert_eq!(changed, argv != want, "changed flag for {argv:?}");
    let again = redactor.redact(&mut args);
    assert!(!again, "redacting {argv:?} twice changed {args:?}");
    assert_eq!(args, want, "idempotence for {argv:?}");
    assert_eq!(args.len(), argv.len(), "arguments keep their places");
}

const R: &str = MARKER;

#[test]
fn the_marker() {
    assert_eq!(R, "[REDACTED]");
}

#[test]
fn secret_options_in_every_spelling() {
    let r = builtin();
    for (argv, want) in [
        (
            &["app", "--password=Hunter2"][..],
            &["app", "--password=[REDACTED]"][..],
        ),
        (&["app", "--password", "Hunter2"], &["app", "--password", R]),
        (&["app", "-password", "Hunter2"], &["app", "-password", R]),
        (
            &["app", "-password=Hunter2"],
            &["app", "-password=[REDACTED]"],
        ),
        (
            &["app", "--password=two words"],
            &["app", "--password=[REDACTED]"],
        ),
        (&["app", "--passwd", "x1"], &["app", "--passwd", R]),
        (&["app", "--pass", "x1"], &["app", "--pass", R]),
        (&["app", "--db-pass=x1"], &["app", "--db-pass=[REDACTED]"]),
        (
            &["app", "--db-password", "x1"],
            &["app", "--db-password", R],
        ),
        (
            &["app", "--DB_PASSWORD=x1"],
            &["app", "--DB_PASSWORD=[REDACTED]"],
        ),
        (&["app", "--passphrase", "x1"], &["app", "--passphrase", R]),
        (&["app", "--token", "t0k"], &["app", "--token", R]),
        (&["app", "--token=t0k"], &["app", "--token=[REDACTED]"]),
        (&["app", "--auth-token", "t0k"], &["app", "--auth-token", R]),
        (
            &["app", "--access-token=t0k"],
            &["app", "--access-token=[REDACTED]"],
        ),
        (&["app", "--api-key", "k1"], &["app", "--api-key", R]),
        (&["app", "--apikey=k1"], &["app", "--apikey=[REDACTED]"]),
        (&["app", "--api_key=k1"], &["app", "--api_key=[REDACTED]"]),
        (&["app", "--secret", "s1"], &["app", "--secret", R]),
        (
            &["app", "--client-secret=s1"],
            &["app", "--client-secret=[REDACTED]"],
        ),
        (&["app", "--access-key", "k1"], &["app", "--access-key", R]),
        (
            &["app", "--secret-key=k1"],
            &["app", "--secret-key=[REDACTED]"],
        ),
        (&["az", "--account-key", "k1"], &["az", "--account-key", R]),
        (
            &["app", "--auth", "bob:pw"],
            &["app", "--auth", "bob:[REDACTED]"],
        ),
        (&["app", "--auth=TOKEN"], &["app", "--auth=[REDACTED]"]),
        (
            &["app", "--basic-auth", "bob:pw"],
            &["app", "--basic-auth", "bob:[REDACTED]"],
        ),
        (
            &["java", "-Dapp.password=x1", "-jar", "a.jar"],
            &["java", "-Dapp.password=[REDACTED]", "-jar", "a.jar"],
        ),
        (
            &["keytool", "-storepass", "changeit", "-keypass", "k2"],
            &["keytool", "-storepass", R, "-keypass", R],
        ),
        (
            &["openssl", "rsa", "-passin", "pass:x1"],
            &["openssl", "rsa", "-passin", R],
        ),
        // The value is the next argument unless that is an option.
        (
            &["psql", "--password", "-h", "db"],
            &["psql", "--password", "-h", "db"],
        ),
        (&["app", "--password", "-"], &["app", "--password", "-"]),
        (&["app", "--password"], &["app", "--password"]),
        (&["app", "--password="], &["app", "--password="]),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn program_short_options() {
    let r = builtin();
    for (argv, want) in [
        // mysql: `-pVALUE` attached only.
        (
            &["mysql", "-uroot", "-pHunter2", "db"][..],
            &["mysql", "-uroot", "-p[REDACTED]", "db"][..],
        ),
        (
            &["/usr/bin/mysqldump", "-pHunter2", "db"],
            &["/usr/bin/mysqldump", "-p[REDACTED]", "db"],
        ),
        (
            &["mariadb", "--password=Hunter2"],
            &["mariadb", "--password=[REDACTED]"],
        ),
        (
            &["sudo", "mysql", "-pHunter2"],
            &["sudo", "mysql", "-p[REDACTED]"],
        ),
        (
            &["sshpass", "-p", "Hunter2", "ssh", "-p", "22", "host"],
            &["sshpass", "-p", R, "ssh", "-p", "22", "host"],
        ),
        (
            &["sshpass", "-pHunter2", "ssh", "host"],
            &["sshpass", "-p[REDACTED]", "ssh", "host"],
        ),
        (
            &["mongosh", "-u", "admin", "-p", "Hunter2"],
            &["mongosh", "-u", "admin", "-p", R],
        ),
        (
            &["redis-cli", "-h", "cache", "-p", "6379", "-a", "Hunter2"],
            &["redis-cli", "-h", "cache", "-p", "6379", "-a", R],
        ),
        (
            &["sqlcmd", "-S", "db", "-U", "sa", "-P", "Hunter2"],
            &["sqlcmd", "-S", "db", "-U", "sa", "-P", R],
        ),
        (
            &["ldapsearch", "-D", "cn=admin", "-w", "Hunter2"],
            &["ldapsearch", "-D", "cn=admin", "-w", R],
        ),
        (
            &["zip", "-P", "Hunter2", "a.zip", "f"],
            &["zip", "-P", R, "a.zip", "f"],
        ),
        (
            &["7z", "a", "-pHunter2", "a.7z"],
            &["7z", "a", "-p[REDACTED]", "a.7z"],
        ),
        (
            &[
                "docker",
                "login",
                "-u",
                "bob",
                "-p",
                "Hunter2",
                "registry.example.com",
            ],
            &[
                "docker",
                "login",
                "-u",
                "bob",
                "-p",
                R,
                "registry.example.com",
            ],
        ),
        (
            &["podman", "login", "-p=Hunter2", "quay.io"],
            &["podman", "login", "-p=[REDACTED]", "quay.io"],
        ),
        (
            &["curl", "-u", "bob:pw", "https://x.example/"],
            &["curl", "-u", "bob:[REDACTED]", "https://x.example/"],
        ),
        (
            &["curl", "-ubob:pw", "https://x.example/"],
            &["curl", "-ubob:[REDACTED]", "https://x.example/"],
        ),
        (
            &["curl", "--user=bob:pw", "-U", "p:q", "https://x.example/"],
            &[
                "curl",
                "--user=bob:[REDACTED]",
                "-U",
                "p:[REDACTED]",
                "https://x.example/",
            ],
        ),
        (
            &["curl", "--proxy-user", "p:q", "https://x.example/"],
            &["curl", "--proxy-user", "p:[REDACTED]", "https://x.example/"],
        ),
        (
            &["smbclient", "//srv/share", "-U", "bob%pw"],
            &["smbclient", "//srv/share", "-U", "bob%[REDACTED]"],
        ),
        (
            &["openssl", "enc", "-aes256", "-k", "Hunter2"],
            &["openssl", "enc", "-aes256", "-k", R],
        ),
        (
            &["useradd", "-p", "$6$salt$hash", "bob"],
            &["useradd", "-p", R, "bob"],
        ),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn headers_keep_their_name() {
    let r = builtin();
    for (argv, want) in [
        (
            &[
                "curl",
                "-H",
                "Authorization: Bearer abc.def",
                "https://x.example/",
            ][..],
            &[
                "curl",
                "-H",
                "Authorization: [REDACTED]",
                "https://x.example/",
            ][..],
        ),
        (
            &["curl", "-H", "authorization:Basic Zm9vOmJhcg=="],
            &["curl", "-H", "authorization:[REDACTED]"],
        ),
        (
            &["curl", "--header=Proxy-Authorization: Basic Zm9vOmJhcg=="],
            &["curl", "--header=Proxy-Authorization: [REDACTED]"],
        ),
        (
            &["curl", "-H", "Cookie: session=abc; theme=dark"],
            &["curl", "-H", "Cookie: [REDACTED]"],
        ),
        (
            &["curl", "-H", "X-Api-Key: k123"],
            &["curl", "-H", "X-Api-Key: [REDACTED]"],
        ),
        (
            &["curl", "-H", "x-auth-token: t1"],
            &["curl", "-H", "x-auth-token: [REDACTED]"],
        ),
        (
            &["curl", "-H", "PRIVATE-TOKEN: glx"],
            &["curl", "-H", "PRIVATE-TOKEN: [REDACTED]"],
        ),
        (
            &["curl", "-HAuthorization: Bearer x"],
            &["curl", "-HAuthorization: [REDACTED]"],
        ),
        (
            &["app", "Bearer abc.def-ghi"],
            &["app", "Bearer [REDACTED]"],
        ),
        (
            &[
                "sh",
                "-c",
                "curl -s -H 'Authorization: Bearer abc' https://x.example/ && echo ok",
            ],
            &[
                "sh",
                "-c",
                "curl -s -H 'Authorization: [REDACTED]' https://x.example/ && echo ok",
            ],
        ),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn urls_lose_their_password_only() {
    let r = builtin();
    for (argv, want) in [
        (
            &["git", "clone", "https://bob:s3cret@example.com/repo.git"][..],
            &[
                "git",
                "clone",
                "https://bob:[REDACTED]@example.com/repo.git",
            ][..],
        ),
        (
            &["psql", "postgresql://app:p%40ss@db:5432/x"],
            &["psql", "postgresql://app:[REDACTED]@db:5432/x"],
        ),
        (
            &["app", "--cache=redis://:pw@cache:6379/0"],
            &["app", "--cache=redis://:[REDACTED]@cache:6379/0"],
        ),
        (
            &["app", "DATABASE_URL=mysql://root:p@ss@db/x"],
            &["app", "DATABASE_URL=mysql://root:[REDACTED]@db/x"],
        ),
        (
            &["app", "see ftp://u:pw@h/ and HTTPS://U:PW@H/"],
            &[
                "app",
                "see ftp://u:[REDACTED]@h/ and HTTPS://U:[REDACTED]@H/",
            ],
        ),
        (
            &["app", "https://a@b.example:pw@host/"],
            &["app", "https://a@b.example:[REDACTED]@host/"],
        ),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn token_formats() {
    let r = builtin();
    let ghp = format!("ghp_{}", "a1B2".repeat(9));
    let gho = format!("gho_{}", "Z9y8".repeat(9));
    let ghs = format!("ghs_{}", "0000".repeat(9));
    let ghu = format!("ghu_{}", "abcd".repeat(9));
    let pat = format!("github_pat_11ABCDEFG0123456789_{}", "x".repeat(40));
    let glpat = "glpat-abcdefghij0123456789";
    let slack = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    let slack_p = "xoxp-1234567890-abcdef";
    let google = "AIzaSyA-1234567890abcdefghijklmnopqrstu";
    let stripe = "sk_live_0123456789abcdefABCDEF";
    let npm = format!("npm_{}", "A1b2C3".repeat(6));
    let vault = "hvs.CAESIJlWh0aW5nIHRvIHNlZSBoZXJlLg";
    let jwt =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let asia = "ASIAY34FZKBOKMUTVV7A";
    for token in [
        ghp.as_str(),
        &gho,
        &ghs,
        &ghu,
        &pat,
        glpat,
        slack,
        slack_p,
        google,
        stripe,
        &npm,
        vault,
        jwt,
        aws,
        asia,
    ] {
        check(&r, &["app", token], &["app", R]);
        let inside = format!("x {token} y");
        check(&r, &["app", &inside], &["app", "x [REDACTED] y"]);
        let url = format!("https://{token}@github.com/o/r.git");
        check(
            &r,
            &["git", "clone", &url],
            &["git", "clone", "https://[REDACTED]@github.com/o/r.git"],
        );
    }
    check(
        &r,
        &[
            "aws",
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ],
        &["aws", "aws_secret_access_key=[REDACTED]"],
    );
    check(
        &r,
        &[
            "app",
            "AWS_SESSION_TOKEN=FwoGZXIvYXdzEB==",
            "GITHUB_TOKEN=abc",
        ],
        &[
            "app",
            "AWS_SESSION_TOKEN=[REDACTED]",
            "GITHUB_TOKEN=[REDACTED]",
        ],
    );
}

#[test]
fn private_key_blocks() {
    let r = builtin();
    for kind in ["RSA ", "", "OPENSSH ", "EC ", "ENCRYPTED "] {
        let block = format!(
            "-----BEGIN {kind}PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END {kind}PRIVATE KEY-----\n"
        );
        let want =
            format!("-----BEGIN {kind}PRIVATE KEY-----[REDACTED]-----END {kind}PRIVATE KEY-----\n");
        check(
            &r,
            &["app", "--key-data", &block],
            &["app", "--key-data", &want],
        );
    }
    // Cut short (the kernel keeps 255 bytes of an argument): to the end.
    check(
        &r,
        &["app", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF"],
        &["app", "-----BEGIN PGP PRIVATE KEY BLOCK-----[REDACTED]"],
    );
    // A public key or certificate is no secret.
    check(
        &r,
        &[
            "app",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ],
        &[
            "app",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ],
    );
}

#[test]
fn key_value_arguments() {
    let r = builtin();
    for (argv, want) in [
        (
            &[
                "env",
                "PASSWORD=Hunter2",
                "DB_PASSWORD=x1",
                "MYSQL_PWD=x2",
                "app",
            ][..],
            &[
                "env",
                "PASSWORD=[REDACTED]",
                "DB_PASSWORD=[REDACTED]",
                "MYSQL_PWD=[REDACTED]",
                "app",
            ][..],
        ),
        (&["env", "password=a;b"], &["env", "password=[REDACTED]"]),
        (
            &[
                "curl",
                "https://api.example.com/v1?access_token=abc123&page=2",
            ],
            &[
                "curl",
                "https://api.example.com/v1?access_token=[REDACTED]&page=2",
            ],
        ),
        (
            &[
                "curl",
                "https://s3.example.com/b/k?X-Amz-Signature=f00d&X-Amz-Expires=60",
            ],
            &[
                "curl",
                "https://s3.example.com/b/k?X-Amz-Signature=[REDACTED]&X-Amz-Expires=60",
            ],
        ),
        (
            &["az", "https://a.blob.core.windows.net/c?sv=2022&sig=abc%3D"],
            &[
                "az",
                "https://a.blob.core.windows.net/c?sv=2022&sig=[REDACTED]",
            ],
        ),
        (
            &["app", "Server=db;User Id=sa;Password=Hunter2;Database=x"],
            &["app", "Server=db;User Id=sa;Password=[REDACTED];Database=x"],
        ),
        (
            &[
                "kubectl",
                "create",
                "secret",
                "generic",
                "db",
                "--from-literal=password=Hunter2",
            ],
            &[
                "kubectl",
                "create",
                "secret",
                "generic",
                "db",
                "--from-literal=password=[REDACTED]",
            ],
        ),
        (
            &[
                "mount",
                "-o",
                "username=bob,password=pw,vers=3",
                "//s/x",
                "/mnt",
            ],
            &[
                "mount",
                "-o",
                "username=bob,password=[REDACTED],vers=3",
                "//s/x",
                "/mnt",
            ],
        ),
        (
            &[
                "app",
                "--config",
                r#"{"user":"bob","password":"Hunter2","api_key": "k\"1"}"#,
            ],
            &[
                "app",
                "--config",
                r#"{"user":"bob","password":"[REDACTED]","api_key": "[REDACTED]"}"#,
            ],
        ),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn shell_commands_inside_an_argument() {
    let r = builtin();
    for (argv, want) in [
        (
            &[
                "sh",
                "-c",
                "mysql -uroot -pHunter2 db && curl -u bob:pw https://x.example/",
            ][..],
            &[
                "sh",
                "-c",
                "mysql -uroot -p[REDACTED] db && curl -u bob:[REDACTED] https://x.example/",
            ][..],
        ),
        (
            &["bash", "-c", "app --password 'abc def' --token=\"t 1\" -v"],
            &[
                "bash",
                "-c",
                "app --password '[REDACTED]' --token=\"[REDACTED]\" -v",
            ],
        ),
        (
            &["sh", "-c", "PGPASSWORD=Hunter2 psql -h db"],
            &["sh", "-c", "PGPASSWORD=[REDACTED] psql -h db"],
        ),
        (
            &["sh", "-c", "export API_TOKEN=\"t 1\"; run"],
            &["sh", "-c", "export API_TOKEN=\"[REDACTED]\"; run"],
        ),
        (
            &["sh", "-c", "mysql -p'Hunter2' db"],
            &["sh", "-c", "mysql -p'[REDACTED]' db"],
        ),
    ] {
        check(&r, argv, want);
    }
}

#[test]
fn near_misses_are_left_alone() {
    let r = builtin();
    for argv in [
        &["ssh", "-p", "2222", "host"][..],
        &["ssh", "-p2222", "host"],
        &["curl", "-p", "-x", "proxy:8080", "https://x.example/"],
        &["scp", "-P", "22", "f", "host:"],
        &["mysql", "-P", "3306", "-h", "db", "-p", "shop"],
        &["mysql", "--password", "shop"],
        &["redis-cli", "-p", "6379"],
        &["docker", "run", "-p", "8080:80", "nginx"],
        &["docker", "login", "--password-stdin", "-u", "bob"],
        &["7z", "x", "-p", "a.7z"],
        &["openssl", "req", "-keyout", "k.pem", "-kdf", "x"],
        &["nc", "-p", "1234", "host", "80"],
        &[
            "app",
            "--port",
            "8080",
            "--passive",
            "--bypass",
            "x",
            "--compass",
            "y",
        ],
        &[
            "app",
            "--password-file",
            "/etc/pw",
            "--token-path=/t",
            "--secret-name",
            "db",
        ],
        &[
            "app",
            "--no-password",
            "x",
            "--ask-pass",
            "y",
            "--prompt-token",
            "z",
        ],
        &[
            "app",
            "--key",
            "/etc/tls/key.pem",
            "--max-tokens=100",
            "--tokens",
            "5",
        ],
        &[
            "app",
            "--user",
            "bob",
            "--auth-type",
            "basic",
            "--authorization-mode=Node,RBAC",
        ],
        &["curl", "-u", "bob", "https://x.example/"],
        &["git", "clone", "https://example.com/repo.git"],
        &["git", "clone", "git@github.com:org/repo.git"],
        &["ssh", "user@host"],
        &["curl", "https://user@example.com/"],
        &["curl", "http://host:8080/path?q=1&x=a@b"],
        &[
            "env",
            "PWD=/home/x",
            "OLDPWD=/tmp",
            "PGPASSFILE=/p",
            "TOKEN_FILE=/t",
        ],
        &["ls", "-la", "a=b", "x==y", "="],
        &[
            "git",
            "commit",
            "-m",
            "fix the password reset token refresh",
        ],
        &[
            "python3",
            "-c",
            "import socket; s=socket.socket(); s.connect(('127.0.0.1', 80))",
        ],
        &[
            "app",
            "AKIAIOSFODNN7EXAMPL",
            "ghp_short",
            "eyJhbGciOiJIUzI1NiJ9",
            "xoxb-1",
        ],
        &[
            "app",
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: text/plain",
        ],
        &["app", "--bearer-auth-header=on"],
        &[],
        &[""],
    ] {
        check(&r, argv, argv);
    }
}

/// The kernel keeps 4,096 bytes of an argument vector: the last argument may end anywhere
/// (docs/events.md says what is redacted then). Each case is the end of such a vector.
#[test]
fn secrets_cut_at_the_capture_boundary() {
    let r = builtin();
    // What is left is still recognisable: redacted.
    check(
        &r,
        &["app", "--password=Hun"],
        &["app", &format!("--password={R}")],
    );
    check(&r, &["mysql", "-pHun"], &["mysql", &format!("-p{R}")]);
    check(
        &r,
        &["curl", "-H", "Authorization: Bea"],
        &["curl", "-H", &format!("Authorization: {R}")],
    );
    check(
        &r,
        &["x", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow"],
        &["x", &format!("-----BEGIN RSA PRIVATE KEY-----{R}")],
    );
    // The value cut off entirely: nothing of it is there.
    check(&r, &["app", "--token"], &["app", "--token"]);
    // What is left is not recognisable: it stays (documented).
    check(
        &r,
        &["curl", "https://bob:s3c"],
        &["curl", "https://bob:s3c"],
    );
    check(&r, &["aws", "AKIAIOSFOD"], &["aws", "AKIAIOSFOD"]);
}

#[test]
fn custom_patterns() {
    let r = with(&[
        "--redact",
        r"Hunter\d",
        "--redact",
        "(?i)session=([a-z0-9]+)",
    ]);
    check(
        &r,
        &[
            "app",
            "Hunter2",
            "xHunter3y",
            "SESSION=abc9",
            "--password=Hunter2",
        ],
        &[
            "app",
            R,
            "x[REDACTED]y",
            "SESSION=[REDACTED]",
            "--password=[REDACTED]",
        ],
    );
    // An empty match redacts nothing; a match inside a marker is left alone.
    let r = with(&["--redact", "x*", "--redact", "RED", "--redact", r"\w+ACT"]);
    check(
        &r,
        &["app", "--token=t", "ab"],
        &["app", "--token=[REDACTED]", "ab"],
    );
    check(&r, &["app", "xx"], &["app", R]);
    // Without the built-in rules, custom patterns alone are not applied either.
    let r = with(&["--redact-args=off", "--redact", "Hunter2"]);
    check(
        &r,
        &["app", "Hunter2", "--password=x"],
        &["app", "Hunter2", "--password=x"],
    );
}

#[test]
fn off_redacts_nothing() {
    let r = with(&["--redact-args", "off"]);
    assert!(!r.is_on());
    let argv = [
        "mysql",
        "-pHunter2",
        "https://bob:s3cret@example.com/",
        "Authorization: Bearer x",
    ];
    check(&r, &argv, &argv);
    let r = with(&[]);
    assert!(r.is_on(), "on by default");
    assert!(!Redactor::default().is_on());
}

#[test]
fn an_invalid_pattern_is_refused_naming_the_flag_and_the_pattern() {
    let err = RunConfig::from_flags(&["--redact", "tok(en"]).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("--redact") && text.contains("tok(en"),
        "{text}"
    );
    assert!(text.contains("unclosed group"), "{text}");
    let err = RunConfig::from_flags(&["--redact-args", "maybe"]).expect_err("refused");
    assert!(
        err.to_string().contains("possible values: on, off"),
        "{err}"
    );
}

#[test]
fn arguments_that_were_not_utf8() {
    // What `String::from_utf8_lossy` made of invalid bytes around a secret.
    let raw = b"--password=\xffHunter2\xfe";
    let arg = String::from_utf8_lossy(raw).into_owned();
    check(
        &builtin(),
        &["app", &arg],
        &["app", "--password=[REDACTED]"],
    );
    let url = String::from_utf8_lossy(b"https://b\xffb:s\xfecret@h\xff/").into_owned();
    check(
        &builtin(),
        &["app", &url],
        &["app", "https://b\u{fffd}b:[REDACTED]@h\u{fffd}/"],
    );
    let noise = String::from_utf8_lossy(b"\xff\xfe\xfd abc \xc3").into_owned();
    check(&builtin(), &["app", &noise], &["app", &noise]);
    let multibyte = "--pässword=ü --tökén ü 🔑=x ключ=значение";
    check(&builtin(), &["app", multibyte], &["app", multibyte]);
}

/// Arguments of 100 kB in shapes that stress each rule take milliseconds, not minutes (no
/// backtracking), even in a debug build.
#[test]
fn long_arguments_stay_fast() {
    let r = with(&["--redact", r"(a|aa)+b", "--redact", r"(?i)secret-[a-z]+"]);
    let size = 100 * 1024;
    let cut = |s: String| s.chars().take(size).collect::<String>();
    let shapes = [
        "a".repeat(size),
        cut("-----BEGIN RSA PRIVATE KEY-----".repeat(size / 30)),
        cut("https://u:".repeat(size / 10)),
        cut("Authorization: ".repeat(size / 15)),
        cut("k=v&".repeat(size / 4)),
        cut("password=".repeat(size / 9)),
        cut("\"k\":\"".repeat(size / 5)),
        cut("eyJabcd.".repeat(size / 8)),
        cut("--password ".repeat(size / 11)),
        cut("'\" ".repeat(size / 3)),
        cut("ключ ".repeat(size / 5)),
        cut("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac".repeat(size / 48)),
        // A run that fails late, with matches after its start.
        cut(format!("\"k\": \"{}", "a=1 ".repeat(size / 4))),
        cut(format!("https://u:{}", "a=1&".repeat(size / 4))),
        cut(format!(
            "-----BEGIN PRIVATE KEY-----{}",
            "token=x ".repeat(size / 8)
        )),
        cut("Cookie: x=1; ".repeat(size / 13)),
        cut("x-token:".repeat(size / 8)),
        cut("ghp_".repeat(size / 4)),
        cut(format!("{}=", "a.".repeat(size / 2))),
        cut("Bearer Bearer ".repeat(size / 14)),
    ];
    for shape in shapes {
        let args = vec!["app".to_owned(), shape.clone(), shape];
        let started = Instant::now();
        let _ = r.redacted(&args);
        let took = started.elapsed();
        // Catastrophic would be minutes; a debug build reads a few MB/s, a release one 100+.
        let bound = Duration::from_millis(if cfg!(debug_assertions) { 5_000 } else { 250 });
        assert!(
            took < bound,
            "{took:?} for {:?}…",
            args.get(1).map(|a| a.chars().take(40).collect::<String>())
        );
    }
}

/// Pids no real process has, so nothing is read from this machine's `/proc`.
const P: u32 = 4_000_000_000;

fn identity(sid: u32) -> agent_common::TaskIdentity {
    agent_common::TaskIdentity {
        loginuid: 1000,
        sessionid: 3,
        uid: 0,
        euid: 0,
        gid: 0,
        egid: 0,
        sid,
        tty: 0,
    }
}

fn image(path: &str, args: &[&str], sid: u32) -> crate::process::ExecImage {
    crate::process::image::exec_of(path, args, identity(sid))
}

#[test]
fn the_process_table_redacts_what_it_keeps_and_counts_it_once() {
    let mut table = ProcessTable::new(100, 1_000);
    table.set_redactor(builtin());
    let kept = table.insert(Arc::new(ProcessInfo {
        args: strings(&["mysql", "-pHunter2", "db"]),
        ..ProcessInfo::from_comm(P + 10, "mysql")
    }));
    assert_eq!(kept.args, ["mysql", "-p[REDACTED]", "db"]);
    assert!(kept.args_redacted);
    assert_eq!(kept.command_line(), "mysql -p[REDACTED] db");
    assert_eq!(table.get(P + 10).as_deref(), Some(&*kept));
    assert_eq!(table.stats.args_redacted, 1);
    // A fork copies the redacted parent: nothing more to redact, not counted again; the
    // child names its parent by the redacted arguments.
    table.on_fork(P + 10, P + 11, "mysql", &identity(P + 10), 5);
    let child = table.get(P + 11).expect("forked");
    assert_eq!(child.args, ["mysql", "-p[REDACTED]", "db"]);
    assert!(child.args_redacted);
    assert_eq!(
        child.parent.as_ref().map(|p| p.args.clone()),
        Some(strings(&["mysql", "-p[REDACTED]", "db"]))
    );
    assert_eq!(table.stats.args_redacted, 1);
    // An exec with secrets is redacted and counted; one that leads its own session names
    // itself as leader by its redacted arguments.
    table.on_exec(
        P + 11,
        image(
            "/usr/bin/curl",
            &["curl", "-u", "bob:pw", "https://x.example/"],
            P + 11,
        ),
        "curl",
        7,
    );
    let curl = table.get(P + 11).expect("exec'd");
    let want = strings(&["curl", "-u", "bob:[REDACTED]", "https://x.example/"]);
    assert_eq!(curl.args, want);
    assert!(curl.args_redacted);
    assert_eq!(table.stats.args_redacted, 2);
    let leader = curl
        .session_leader
        .as_ref()
        .expect("its own session leader");
    assert_eq!((leader.pid, &leader.args), (P + 11, &want));
    assert_eq!(curl.ancestor().args, want);
    table.insert(Arc::new(ProcessInfo {
        args: strings(&["ls", "-la"]),
        ..ProcessInfo::from_comm(P + 12, "ls")
    }));
    let ls = table.get(P + 12).expect("inserted");
    assert!(!ls.args_redacted);
    assert_eq!(table.stats.args_redacted, 2);
    // Without a redactor (the default), nothing is.
    let mut plain = ProcessTable::new(100, 1_000);
    let kept = plain.insert(Arc::new(ProcessInfo {
        args: strings(&["mysql", "-pHunter2"]),
        ..ProcessInfo::from_comm(P + 10, "mysql")
    }));
    assert_eq!(kept.args, ["mysql", "-pHunter2"]);
}

#[test]
fn nothing_is_copied_when_nothing_changes() {
    let r = builtin();
    let mut info = Arc::new(ProcessInfo {
        args: strings(&["curl", "-s", "https://x.example/"]),
        ..ProcessInfo::from_comm(1, "curl")
    });
    let before = Arc::as_ptr(&info);
    assert!(!crate::process::redact_process(&r, &mut info));
    assert_eq!(Arc::as_ptr(&info), before);
    assert!(r.redacted(&info.args).is_none());
}

/// What one typical argv costs (printed; `cargo test --release -p egret redaction_cost --
/// --nocapture --ignored` for the real number).
#[test]
#[ignore = "a measurement, not a check"]
fn redaction_cost() {
    let r = builtin();
    let typical = [
        strings(&[
            "/usr/bin/curl",
            "-s",
            "-o",
            "/dev/null",
            "-H",
            "Accept: application/json",
            "https://api.example.com/v1/items?page=2",
        ]),
        strings(&[
            "/usr/bin/python3",
            "/opt/app/worker.py",
            "--queue",
            "jobs",
            "--concurrency=4",
            "--log-level",
            "info",
        ]),
        strings(&[
            "/bin/sh",
            "-c",
            "exec /usr/local/bin/app --config /etc/app.yaml >> /var/log/app.log 2>&1",
        ]),
        strings(&["mysql", "-uroot", "-pHunter2", "-h", "db", "shop"]),
        strings(&[
            "java",
            "-Xmx2g",
            "-Dspring.datasource.password=Hunter2",
            "-jar",
            "/opt/app.jar",
        ]),
    ];
    for args in &typical {
        let rounds = 20_000_u32;
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(r.redacted(std::hint::black_box(args)));
        }
        let per = started.elapsed() / rounds;
        println!("{per:>10?} per argv  {args:?}");
    }
}
