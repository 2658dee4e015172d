//! Redaction: secrets in command lines never leave egret.
//!
//! A process's arguments go on every line about it (`process.args`, `process.command_line`,
//! and the parent's and leaders' where a line names them), and command lines carry secrets:
//! `mysql -pHunter2`, `curl -H 'Authorization: Bearer …'`, `https://bob:s3cret@host/`,
//! `--password=…`, cloud access keys. A [`Redactor`], compiled once from `--redact-args` and
//! `--redact`, replaces each secret with [`MARKER`] when the process table learns a process's
//! arguments (`process::ProcessTable::insert`), so nothing downstream (lines, alerts,
//! DNS lines, caches) ever holds them. `docs/events.md` ("Secrets in arguments") lists the
//! rules.
//!
//! Every argument keeps its place (`process.args_count` does not change); only the secret part
//! of an argument is replaced (`--password=[REDACTED]`, `https://bob:[REDACTED]@host/`,
//! `Authorization: [REDACTED]`). The rules, in order:
//!
//! 1. **Options**, argument by argument, knowing the program (`argv[0]`'s basename, or a later
//!    argument naming a known program: `sudo mysql …`, `docker exec db mysql …`): secret
//!    options in every spelling (`--password=V`, `--password V`, `-password V`,
//!    `--db-password V`, `--client-secret V`, `--auth user:V`, ...), and the short options of
//!    the programs that take a password in one (`mysql -pV`, `sshpass -p V`, `curl -u user:V`,
//!    `docker login -p V`, ...). An argument holding a shell command (`sh -c '…'`: it has
//!    whitespace) is split into shell words and gets the same treatment.
//! 2. **Patterns** anywhere in an argument: URL userinfo, authorization and cookie headers,
//!    `Bearer` tokens, private key blocks, known token formats (AWS, GitHub, GitLab, Slack,
//!    Google, Stripe, npm, Vault, JWT), and `KEY=VALUE` / `"KEY": "VALUE"` where the key names
//!    a secret (`PASSWORD=`, `aws_secret_access_key=`, `?access_token=`, `Password=…;`).
//! 3. **`--redact` patterns**: what each user regex matches (with capture groups: what the
//!    groups match).
//!
//! Redacting is idempotent: what is already [`MARKER`] is left alone, so a forked child (a copy
//! of its redacted parent) is not redacted, nor counted, again. The regular expressions run in
//! linear time (the `regex` crate): a 100 kB argument costs a few milliseconds at worst, with
//! no catastrophic backtracking.

use std::{borrow::Cow, ops::Range, sync::Arc};

use regex::{Captures, Regex};

/// What a secret is replaced with.
pub const MARKER: &str = "[REDACTED]";

/// A `--redact` pattern: a compiled regular expression (equal to another when its source is).
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// `--redact`'s value parser: the pattern compiled, or the regex crate's error (clap shows
    /// it after the flag and the pattern).
    ///
    /// # Errors
    /// The pattern is not a valid regular expression (or compiles too large).
    pub fn parse(text: &str) -> Result<Self, regex::Error> {
        Regex::new(text).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// Cannot happen with the rules below (a test compiles them); reported, never ignored.
    #[error("the built-in redaction rules do not compile: {0}")]
    Builtin(#[source] regex::Error),
}

/// Replaces secrets in argument vectors. Cheap to clone (the rules are shared); the default is
/// off (redacts nothing).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    rules: Option<Arc<Rules>>,
}

#[derive(Debug)]
struct Rules {
    builtin: Builtin,
    custom: Vec<Regex>,
}

impl Redactor {
    /// The redactor `--redact-args` and `--redact` ask for: off, or the built-in rules then
    /// the patterns.
    ///
    /// # Errors
    /// [`RedactError::Builtin`] (never, in practice).
    pub fn new(on: bool, patterns: &[Pattern]) -> Result<Self, RedactError> {
        if !on {
            return Ok(Self::off());
        }
        Ok(Self {
            rules: Some(Arc::new(Rules {
                builtin: Builtin::compile()?,
                custom: patterns.iter().map(|p| p.0.clone()).collect(),
            })),
        })
    }

    /// The built-in rules only (what `egret run` does by default).
    ///
    /// # Errors
    /// [`RedactError::Builtin`] (never, in practice).
    pub fn builtin() -> Result<Self, RedactError> {
        Self::new(true, &[])
    }

    /// Redacts nothing (`--redact-args off`).
    pub fn off() -> Self {
        Self { rules: None }
    }

    pub fn is_on(&self) -> bool {
        self.rules.is_some()
    }

    /// Replaces the secrets in `args` with [`MARKER`]; true when anything changed.
    pub fn redact(&self, args: &mut Vec<String>) -> bool {
        match self.redacted(args) {
            Some(redacted) => {
                *args = redacted;
                true
            }
            None => false,
        }
    }

    /// `args` with the secrets replaced; `None` when there is none (then nothing is copied).
    /// Redacted again until nothing changes (a marker can end one rule's match and start
    /// another's), so what is written is redacted for good.
    pub fn redacted(&self, args: &[String]) -> Option<Vec<String>> {
        let mut out = self.redacted_once(args)?;
        // Each pass only turns text into markers; a few passes reach the fixed point.
        for _ in 0..4 {
            match self.redacted_once(&out) {
                Some(more) => out = more,
                None => break,
            }
        }
        Some(out)
    }

    /// One pass of the rules over `args`.
    fn redacted_once(&self, args: &[String]) -> Option<Vec<String>> {
        let rules = self.rules.as_deref()?;
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spans = Vec::new();
        option_spans(&words, false, &mut spans);
        let mut out: Option<Vec<String>> = None;
        for (i, arg) in args.iter().enumerate() {
            let mut own: Vec<Range<usize>> = spans
                .iter()
                .filter(|(word, _)| *word == i)
                .map(|(_, span)| span.clone())
                .collect();
            let text = replace(arg, &mut own).map_or(Cow::Borrowed(arg.as_str()), Cow::Owned);
            if let Cow::Owned(text) = rules.in_argument(text) {
                if text != *arg {
                    if let Some(slot) = out.get_or_insert_with(|| args.to_vec()).get_mut(i) {
                        *slot = text;
                    }
                }
            }
        }
        out
    }
}

impl Rules {
    /// One argument, its option values already redacted: the shell words of a command it
    /// holds, the patterns, the `--redact` patterns.
    fn in_argument<'a>(&self, text: Cow<'a, str>) -> Cow<'a, str> {
        let text = if text.contains(char::is_whitespace) {
            let words = shell_words(&text);
            let strs: Vec<&str> = words
                .iter()
                .map(|w| text.get(w.clone()).unwrap_or_default())
                .collect();
            let mut spans = Vec::new();
            option_spans(&strs, true, &mut spans);
            let mut spans: Vec<Range<usize>> = spans
                .into_iter()
                .filter_map(|(word, span)| {
                    let start = words.get(word)?.start;
                    Some(start + span.start..start + span.end)
                })
                .collect();
            replace(&text, &mut spans).map_or(text, Cow::Owned)
        } else {
            text
        };
        let mut spans = Vec::new();
        self.builtin.spans(&text, &mut spans);
        let text = replace(&text, &mut spans).map_or(text, Cow::Owned);
        self.custom.iter().fold(text, |text, pattern| {
            let mut spans = custom_spans(pattern, &text);
            replace(&text, &mut spans).map_or(text, Cow::Owned)
        })
    }
}

/// What a `--redact` pattern matches in `text` (its groups' text if it has groups), empty
/// matches and what overlaps a marker left out.
fn custom_spans(pattern: &Regex, text: &str) -> Vec<Range<usize>> {
    let markers: Vec<Range<usize>> = text
        .match_indices(MARKER)
        .map(|(at, m)| at..at + m.len())
        .collect();
    let groups = pattern.captures_len();
    let mut spans = Vec::new();
    for caps in pattern.captures_iter(text) {
        let wanted = if groups > 1 { 1..groups } else { 0..1 };
        for m in wanted.filter_map(|g| caps.get(g)) {
            let span = m.range();
            if !span.is_empty() && !markers.iter().any(|k| overlaps(k, &span)) {
                spans.push(span);
            }
        }
    }
    spans
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// `text` with every span (sorted here; one overlapping an earlier one is dropped) replaced by
/// [`MARKER`]; `None` when nothing changes (no span, or each is the marker already).
fn replace(text: &str, spans: &mut [Range<usize>]) -> Option<String> {
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out = String::new();
    let mut done = 0;
    let mut changed = false;
    for span in spans.iter() {
        if span.start < done || span.is_empty() {
            continue;
        }
        let (Some(before), Some(secret)) = (text.get(done..span.start), text.get(span.clone()))
        else {
            continue;
        };
        out.push_str(before);
        out.push_str(MARKER);
        done = span.end;
        changed |= secret != MARKER;
    }
    if !changed {
        return None;
    }
    out.push_str(text.get(done..).unwrap_or_default());
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Options.

/// Which part of an option's value is the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// All of it.
    Whole,
    /// What follows the first `:` (`user:password`); nothing without one (a user name alone).
    AfterColon,
    /// What follows the first `:` if there is one, else all of it (`--auth user:pw`, `--auth
    /// TOKEN`).
    Credentials,
    /// What follows the first `%` (Samba's `user%password`).
    AfterPercent,
}

/// A program whose options egret knows beyond the common secret option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Other,
    /// mysql, mysqldump, mariadb...: `-pPASSWORD` attached only (`-p` alone prompts, the next
    /// argument is the database), `--password` takes no separate value; `-P` is the port.
    Mysql,
    Sshpass,
    /// mongo, mongosh, mongodump...: `-p PASSWORD`.
    Mongo,
    /// redis-cli, valkey-cli, keydb-cli: `-a PASSWORD`.
    RedisCli,
    /// sqlcmd, bcp, osql: `-P PASSWORD`.
    Sqlcmd,
    /// ldapsearch, ldapmodify...: `-w PASSWORD`.
    Ldap,
    /// zip: `-P PASSWORD`.
    Zip,
    /// 7z, unrar, rar: `-pPASSWORD`.
    SevenZip,
    /// docker, podman, helm...: `-p` is a password only after `login`.
    Registry,
    RegistryLogin,
    /// curl: `-u user:password`, `--user`, `-U`, `--proxy-user`.
    Curl,
    /// smbclient, rpcclient, net...: `-U user%password`, `--user`.
    Samba,
    /// useradd, usermod: `-p HASH`.
    Useradd,
    /// openssl: `-k PASSWORD` (and `-pass`, `-passin`, `-passout`: common names).
    Openssl,
}

/// A short option that carries a password for a program.
struct Short {
    letter: char,
    /// `-pVALUE`.
    attached: bool,
    /// `-p VALUE`.
    separate: bool,
    secret: Secret,
}

impl Program {
    /// The program a word runs, by its basename; `None` for one egret has no rules for.
    fn of(word: &str) -> Option<Self> {
        let base = word.rsplit('/').next().unwrap_or(word);
        let program = match base {
            b if b.starts_with("mysql") || b.starts_with("mariadb") => Self::Mysql,
            "sshpass" => Self::Sshpass,
            b if b.starts_with("mongo") => Self::Mongo,
            "redis-cli" | "valkey-cli" | "keydb-cli" => Self::RedisCli,
            "sqlcmd" | "bcp" | "osql" => Self::Sqlcmd,
            b if b.starts_with("ldap") => Self::Ldap,
            "zip" | "zipcloak" => Self::Zip,
            "7z" | "7za" | "7zr" | "7zz" | "unrar" | "rar" => Self::SevenZip,
            "docker" | "podman" | "nerdctl" | "buildah" | "skopeo" | "helm" | "oras" | "crane"
            | "regctl" => Self::Registry,
            "curl" => Self::Curl,
            "smbclient" | "rpcclient" | "smbcacls" | "smbget" | "smbtree" | "net" => Self::Samba,
            "useradd" | "usermod" => Self::Useradd,
            "openssl" => Self::Openssl,
            _ => return None,
        };
        Some(program)
    }

    fn short(self) -> Option<Short> {
        let (letter, attached, separate, secret) = match self {
            Self::Mysql | Self::SevenZip => ('p', true, false, Secret::Whole),
            Self::Sshpass | Self::Mongo | Self::RegistryLogin | Self::Useradd => {
                ('p', true, true, Secret::Whole)
            }
            Self::RedisCli => ('a', false, true, Secret::Whole),
            Self::Sqlcmd | Self::Zip => ('P', true, true, Secret::Whole),
            Self::Ldap => ('w', true, true, Secret::Whole),
            Self::Curl => ('u', true, true, Secret::AfterColon),
            Self::Samba => ('U', true, true, Secret::AfterPercent),
            Self::Openssl => ('k', false, true, Secret::Whole),
            Self::Other | Self::Registry => return None,
        };
        Some(Short {
            letter,
            attached,
            separate,
            secret,
        })
    }

    /// A second short option (curl's `-U`, the proxy's user).
    fn short2(self) -> Option<Short> {
        (self == Self::Curl).then_some(Short {
            letter: 'U',
            attached: true,
            separate: true,
            secret: Secret::AfterColon,
        })
    }

    /// Long options that carry a secret for this program only.
    fn long(self, name: &str) -> Option<Secret> {
        match (self, name.to_ascii_lowercase().as_str()) {
            (Self::Curl, "user" | "proxy-user") => Some(Secret::AfterColon),
            (Self::Samba, "user") => Some(Secret::AfterPercent),
            _ => None,
        }
    }

    /// It runs the command its first argument (after its options) names: sshpass.
    fn wraps(self) -> bool {
        self == Self::Sshpass
    }

    /// `--password VALUE`: whether a secret long option takes the next word as its value
    /// (mysql's `--password` alone prompts).
    fn separate_long_values(self) -> bool {
        self != Self::Mysql
    }
}

/// The first word of an option name's words that makes it a switch about a secret, not one
/// (`--no-password`, `--ask-pass`, `--prompt-token`).
const NOT_A_VALUE: &[&str] = &[
    "no", "ask", "prompt", "skip", "show", "print", "disable", "enable", "allow", "require", "use",
    "without",
];

/// Option and key names ending like this (case, `-`, `_` and `.` ignored) hold a secret.
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "accountkey",
    "masterkey",
    "encryptionkey",
    "licensekey",
    "signature",
];

/// Whole names (same normalisation) that hold a secret.
const SECRET_NAMES: &[&str] = &[
    "sig",
    "passin",
    "passout",
    "storepass",
    "keypass",
    "srcstorepass",
    "deststorepass",
    "srckeypass",
    "destkeypass",
];

/// Whether an option name (without its dashes) or a `KEY=` key names a secret, and which part
/// of its value is one.
fn secret_name(name: &str) -> Option<Secret> {
    let is_separator = |c: u8| matches!(c, b'-' | b'_' | b'.');
    if let Some(first) = name
        .bytes()
        .position(is_separator)
        .and_then(|at| name.get(..at))
    {
        if NOT_A_VALUE.iter().any(|w| w.eq_ignore_ascii_case(first)) {
            return None;
        }
    }
    // Compared from the end, ignoring case and separators, without copying the name.
    let letters = || {
        name.bytes()
            .rev()
            .filter(|c| !is_separator(*c))
            .map(|c| c.to_ascii_lowercase())
    };
    let ends_with = |word: &str| {
        let mut letters = letters();
        word.bytes().rev().all(|w| letters.next() == Some(w))
    };
    let is = |word: &str| letters().eq(word.bytes().rev());
    if SECRET_SUFFIXES.iter().any(|s| ends_with(s)) || SECRET_NAMES.iter().any(|n| is(n)) {
        return Some(Secret::Whole);
    }
    // Short words only as a whole word: `--pass`, `--db-pass`, `MYSQL_PWD` (not `--bypass`,
    // `--compass`, `OLDPWD`).
    let word_at_end = |word: &str| {
        let Some(at) = name.len().checked_sub(word.len()) else {
            return false;
        };
        name.get(at..)
            .is_some_and(|end| end.eq_ignore_ascii_case(word))
            && (at == 0
                || name
                    .as_bytes()
                    .get(at - 1)
                    .copied()
                    .is_some_and(is_separator))
    };
    if word_at_end("auth") {
        return Some(Secret::Credentials);
    }
    if word_at_end("pass") || (!name.eq_ignore_ascii_case("pwd") && word_at_end("pwd")) {
        return Some(Secret::Whole);
    }
    None
}

/// The spans of the secrets the options of one command carry: `(word, range in the word)`.
/// `words` are the arguments of a process, or (`shell`) the words of a shell command, whose
/// quotes are then not part of a value.
fn option_spans(words: &[&str], shell: bool, out: &mut Vec<(usize, Range<usize>)>) {
    let mut program = Program::Other;
    // The next word that is no option names the program (the first word, a word after a shell
    // separator, the command a wrapper runs).
    let mut command_next = true;
    let mut pending: Option<Secret> = None;
    for (i, raw) in words.iter().enumerate() {
        let (word, offset) = if shell { unquote(raw) } else { (*raw, 0) };
        let shift = |span: Range<usize>| offset + span.start..offset + span.end;
        let is_option = word.len() > 1 && word.starts_with('-');
        if let Some(secret) = pending.take() {
            // `-`: stdin, no secret.
            if word == "-" {
                continue;
            }
            if !is_option {
                if let Some(span) = secret_span(word, secret, shell) {
                    out.push((i, shift(span)));
                }
                continue;
            }
        }
        if !is_option {
            if shell && (matches!(word, "&&" | "||" | "|" | "&" | "(") || word.ends_with(';')) {
                program = Program::Other;
                command_next = true;
            } else if word.contains(char::is_whitespace) {
            } else if let Some(named) = Program::of(word) {
                program = named;
                command_next = false;
            } else if command_next || program.wraps() {
                program = Program::Other;
                command_next = false;
            } else if program == Program::Registry && word == "login" {
                program = Program::RegistryLogin;
            }
            continue;
        }
        if word == "--" {
            continue;
        }
        let double = word.starts_with("--");
        let body = word.get(if double { 2 } else { 1 }..).unwrap_or_default();
        let body_at = word.len() - body.len();
        if !double {
            let short = [program.short(), program.short2()]
                .into_iter()
                .flatten()
                .find(|s| body.starts_with(s.letter));
            if let Some(short) = short {
                let rest_at = body_at + short.letter.len_utf8();
                let rest = word.get(rest_at..).unwrap_or_default();
                if rest.is_empty() {
                    if short.separate {
                        pending = Some(short.secret);
                    }
                    continue;
                }
                if short.attached {
                    // `-p=VALUE` as some parsers take it.
                    let (rest, rest_at) = match rest.strip_prefix('=') {
                        Some(after) => (after, rest_at + 1),
                        None => (rest, rest_at),
                    };
                    if let Some(span) = secret_span(rest, short.secret, shell) {
                        out.push((i, shift(rest_at + span.start..rest_at + span.end)));
                    }
                    continue;
                }
            }
        }
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let Some(secret) = program.long(name).or_else(|| secret_name(name)) else {
            continue;
        };
        match value {
            Some(value) => {
                let value_at = word.len() - value.len();
                if let Some(span) = secret_span(value, secret, shell) {
                    out.push((i, shift(value_at + span.start..value_at + span.end)));
                }
            }
            None if program.separate_long_values() => pending = Some(secret),
            None => {}
        }
    }
}

/// The secret part of an option's value (inside its quotes, for a shell word).
fn secret_span(value: &str, secret: Secret, shell: bool) -> Option<Range<usize>> {
    let (value, offset) = if shell { unquote(value) } else { (value, 0) };
    let after = |c: char| value.find(c).map(|at| at + c.len_utf8()..value.len());
    let span = match secret {
        Secret::Whole => 0..value.len(),
        Secret::AfterColon => after(':')?,
        Secret::Credentials => after(':').unwrap_or(0..value.len()),
        Secret::AfterPercent => after('%')?,
    };
    (!span.is_empty()).then(|| offset + span.start..offset + span.end)
}

/// A shell word without the quotes around it, and where it starts in the word.
fn unquote(word: &str) -> (&str, usize) {
    for quote in ['\'', '"'] {
        if word.len() >= 2 && word.starts_with(quote) && word.ends_with(quote) {
            return (word.get(1..word.len() - 1).unwrap_or_default(), 1);
        }
    }
    (word, 0)
}

/// The words of a shell command: split at whitespace outside quotes (a backslash escapes the
/// next character outside single quotes). Good enough to find options; not a shell parser.
fn shell_words(text: &str) -> Vec<Range<usize>> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some(_), '\\') if quote == Some('"') => escaped = true,
            (Some(_), _) => {}
            (None, c) if c.is_whitespace() => {
                if let Some(s) = start.take() {
                    words.push(s..at);
                }
                continue;
            }
            (None, '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (None, _) => {}
        }
        start.get_or_insert(at);
    }
    if let Some(s) = start {
        words.push(s..text.len());
    }
    words
}

// ---------------------------------------------------------------------------------------------
// Patterns.

/// Header names whose value is a credential.
const HEADERS: &str = r"(?i-u:proxy-authorization|authorization|set-cookie|cookie|[a-z0-9_-]{0,40}api-?key|[a-z0-9_-]{0,40}-token)";

/// Token formats whose whole text is the secret.
const TOKENS: &[&str] = &[
    // AWS access key ids (long-term and temporary).
    r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
    // GitHub: personal, OAuth, user-to-server, server-to-server, refresh; fine-grained.
    r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{30,}",
    r"(?-u:\b)github_pat_[A-Za-z0-9_]{22,}",
    // GitLab personal access tokens.
    r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}",
    // Slack.
    r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
    // Google API keys.
    r"AIza[0-9A-Za-z_-]{35}",
    // Stripe secret and restricted keys.
    r"(?-u:\b)[sr]k_(?:live|test)_[0-9A-Za-z]{16,}",
    // npm.
    r"(?-u:\b)npm_[A-Za-z0-9]{36}",
    // HashiCorp Vault service tokens.
    r"(?-u:\b)hvs\.[A-Za-z0-9_-]{20,}",
    // JSON Web Tokens: header.payload.signature, base64url (`{"` is `eyJ`).
    r"(?-u:\b)eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
];

/// The built-in patterns: `KEY=` on its own (the most frequent match, found without
/// captures), the others as one regular expression (one pass over an argument) with the
/// indices of the groups that say which rule matched.
///
/// Runs that could go on without matching are bounded (keys, URL parts, header names): with
/// one alternation, a run that fails late would be read again for every match after its
/// start, and a long argument with many matches would cost quadratic time. (A JSON value is
/// not: any later `"` ends it, and a bounded repetition of it makes a regex too large for the
/// lazy DFA, which then falls back to a slow engine.)
#[derive(Debug)]
struct Builtin {
    /// `KEY=` (environment, properties, query strings, connection strings): the key, then the
    /// value runs to a delimiter (decided in code).
    keys: Regex,
    regex: Regex,
    /// Groups whose text is the secret.
    secrets: Vec<usize>,
    /// `"KEY": "VALUE"`.
    json_key: usize,
    json_value: usize,
}

impl Builtin {
    fn compile() -> Result<Self, RedactError> {
        let rules = [
            // A private key block: what is between its BEGIN and END lines (or to the end of a
            // cut argument).
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?P<pk>(?s:.*?))(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\z)".to_owned(),
            // URL userinfo: `scheme://user:PASSWORD@` (the password up to the last `@` before
            // the path, in case it holds an unescaped one).
            r"(?i-u:[a-z][a-z0-9+.-]{0,30})://[^/?#\s:]{0,256}:(?P<url>[^/?#\s]{1,256})@".to_owned(),
            // `Authorization: VALUE` and the like, up to a quote or the end of the line.
            format!(r#"{HEADERS}[ \t]*:[ \t]*(?P<hdr>[^"'\r\n]*[^"'\s])"#),
            // `Bearer TOKEN` anywhere.
            r"(?-u:\b)(?i-u:bearer)[ \t]+(?P<bearer>[A-Za-z0-9._~+/-]+=*)".to_owned(),
            format!("(?P<tok>{})", TOKENS.join("|")),
            // `"KEY": "VALUE"` (JSON).
            r#""(?P<jk>[A-Za-z0-9_.-]{1,100})"[ \t]*:[ \t]*"(?P<jv>(?:[^"\\]|\\.)*)""#.to_owned(),
        ];
        let regex = Regex::new(&rules.join("|")).map_err(RedactError::Builtin)?;
        let keys = Regex::new(r"[A-Za-z0-9_.-]{1,100}=").map_err(RedactError::Builtin)?;
        let index = |name: &str| {
            regex
                .capture_names()
                .position(|n| n == Some(name))
                .unwrap_or(usize::MAX)
        };
        Ok(Self {
            secrets: ["pk", "url", "hdr", "bearer", "tok"]
                .into_iter()
                .map(index)
                .collect(),
            json_key: index("jk"),
            json_value: index("jv"),
            keys,
            regex,
        })
    }

    /// The secrets the patterns find in `text`.
    fn spans(&self, text: &str, out: &mut Vec<Range<usize>>) {
        let mut values = Values::new(text);
        for key in self.keys.find_iter(text) {
            let name = key.as_str().strip_suffix('=').unwrap_or_default();
            if secret_name(name).is_some() {
                out.extend(values.after(key.start(), key.end()));
            }
        }
        for caps in self.regex.captures_iter(text) {
            if let Some(span) = self.secret_of(&caps) {
                out.push(span);
            }
        }
    }

    fn secret_of(&self, caps: &Captures<'_>) -> Option<Range<usize>> {
        if let Some(key) = caps.get(self.json_key) {
            secret_name(key.as_str())?;
            return caps.get(self.json_value).map(|v| v.range());
        }
        self.secrets
            .iter()
            .find_map(|group| caps.get(*group))
            .map(|m| m.range())
    }
}

/// Where the values of `KEY=VALUE`s in one argument end. The keys come in order, so each
/// delimiter search starts where the last one ended or found nothing: the argument is read
/// once however many keys it holds (`password=password=…` would be quadratic otherwise).
struct Values<'a> {
    text: &'a str,
    /// The argument is one assignment (no whitespace): a value at its start runs to its end.
    /// Looked at once, when first needed.
    whole: Option<bool>,
    /// The next delimiter (whitespace, `&`, `;`, `,`, a quote) at or after `.0`: `.1`.
    delimiter: (usize, usize),
    /// The next `'` and `"` at or after `.0`: `.1`.
    quotes: [(usize, usize); 2],
}

/// A [`next`] cache before the first search.
const NOT_SEARCHED: (usize, usize) = (usize::MAX, 0);

impl<'a> Values<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            whole: None,
            delimiter: NOT_SEARCHED,
            quotes: [NOT_SEARCHED; 2],
        }
    }

    /// The value of a `KEY=VALUE` whose key starts at `key_at` and value at `value_at`: the
    /// rest of the argument when the argument is that assignment (it starts with the key and
    /// holds no whitespace); else up to whitespace, `&`, `;`, `,` or a quote (a query string,
    /// a connection string, a command); a quoted value up to its closing quote.
    fn after(&mut self, key_at: usize, value_at: usize) -> Option<Range<usize>> {
        let text = self.text;
        let first = text.get(value_at..)?.chars().next();
        let span = match first {
            Some(quote @ ('\'' | '"')) => {
                let slot = usize::from(quote == '"');
                let cached = self.quotes.get_mut(slot)?;
                let end = next(text, cached, value_at + 1, |c| c == quote);
                value_at + 1..end
            }
            _ if key_at == 0
                && *self
                    .whole
                    .get_or_insert_with(|| !text.contains(char::is_whitespace)) =>
            {
                value_at..text.len()
            }
            _ => {
                let end = next(text, &mut self.delimiter, value_at, |c| {
                    c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | '`')
                });
                value_at..end
            }
        };
        (!span.is_empty()).then_some(span)
    }
}

/// The first character matching `wanted` at or after `from` (the end if none). `cached` is the
/// last search (from, found at): a search from between the two has the same answer.
fn next(
    text: &str,
    cached: &mut (usize, usize),
    from: usize,
    wanted: impl Fn(char) -> bool,
) -> usize {
    let (searched_from, found) = *cached;
    if searched_from <= from && from <= found {
        return found;
    }
    let at = text
        .get(from..)
        .and_then(|rest| rest.find(&wanted))
        .map_or(text.len(), |at| from + at);
    *cached = (from, at);
    at
}

#[cfg(test)]
mod tests;
