//! `confab admin …`: calls a running server's admin API and prints the answer as aligned tables
//! for people or, with `--json`, as the API's JSON for scripts. Any failure (unreachable server,
//! wrong token, unknown room …) is one line on stderr and exit status 1, through `main`.
//!
//! The server is the one of the configuration (`--config FILE`, loaded like `serve` does) at its
//! admin listener, `admin.listen` (the public listener has no admin API), or `--server URL`; the
//! token comes from `CONFAB_ADMIN_TOKEN`, else from the configuration's `admin.token`.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::{CreatedInvite, Figure, KeysOut, PeerRow, RoomDetail, RoomRow, SessionRow};
use crate::config::Settings;
use crate::rooms::{InviteOut, KickOut};

/// Environment variable holding the admin token.
pub const TOKEN_ENV: &str = "CONFAB_ADMIN_TOKEN";

/// `confab admin`: options shared by every subcommand, and the subcommand.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The base URL of the server's admin listener, e.g. http://127.0.0.1:9008; default: the
    /// configuration's `admin.listen` address.
    #[arg(long, global = true)]
    server: Option<String>,
    /// The server's configuration file (for `admin.listen` and `admin.token`).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Rooms: list, show, lock, unlock, close.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Invites: create, list, revoke.
    #[command(subcommand)]
    Invites(InvitesCommand),
    /// Users: kick.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Connected devices.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Federation peers: state, deny, allow, retry.
    #[command(subcommand)]
    Federation(PeersCommand),
    /// The server's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The figures `/metrics` exports.
    Stats,
}

#[derive(Debug, Subcommand)]
enum RoomsCommand {
    /// Every room: participants connected/joined, lock, age, expiry, origin.
    List,
    /// A room's members and their devices, invites and activity (never content).
    Show { room_id: String },
    /// Lock a room: only earlier members may come back.
    Lock { room_id: String },
    /// Unlock a room.
    Unlock { room_id: String },
    /// Close a room now: everyone is told, everything in it is deleted.
    Close { room_id: String },
}

#[derive(Debug, Subcommand)]
enum InvitesCommand {
    /// Create an invite and print its link (without the E2EE secret).
    Create {
        room_id: String,
        /// How long it works, e.g. 1h or 2d; default: as long as the room lives.
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// How many joins it admits; default: unlimited.
        #[arg(long)]
        max_uses: Option<u32>,
    },
    /// A room's invites (their tokens are never shown again).
    List { room_id: String },
    /// Revoke an invite by its id.
    Revoke { invite_id: String },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Remove a user from a room; coming back takes a new invite.
    Kick { room_id: String, user_id: String },
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// Connected devices: user, device, display name, rooms.
    List,
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// Known destinations: queue depth, last success and failure, backoff, given up, dropped.
    Peers,
    /// Stop federating with a server (a host alone covers every port), at once and for good.
    Deny {
        #[arg(value_name = "SERVER")]
        peer: String,
    },
    /// Federate with a server again, whatever the configured lists say.
    Allow {
        #[arg(value_name = "SERVER")]
        peer: String,
    },
    /// Forget a destination's backoff and try delivering to it now.
    Retry {
        #[arg(value_name = "SERVER")]
        peer: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Server name, current and old signing keys.
    Show,
    /// Retire the signing key and make a new one (used after the next restart).
    Rotate,
}

/// Runs `confab admin …`.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(&client, args.command, args.json))
}

async fn execute(client: &AdminClient, command: AdminCommand, json: bool) -> anyhow::Result<()> {
    let (method, path, body): (Method, Vec<&str>, Option<Value>) = match &command {
        AdminCommand::Rooms(RoomsCommand::List) => (Method::GET, vec!["rooms"], None),
        AdminCommand::Rooms(RoomsCommand::Show { room_id }) => {
            (Method::GET, vec!["rooms", room_id], None)
        }
        AdminCommand::Rooms(RoomsCommand::Lock { room_id }) => {
            (Method::POST, vec!["rooms", room_id, "lock"], None)
        }
        AdminCommand::Rooms(RoomsCommand::Unlock { room_id }) => {
            (Method::POST, vec!["rooms", room_id, "unlock"], None)
        }
        AdminCommand::Rooms(RoomsCommand::Close { room_id }) => {
            (Method::DELETE, vec!["rooms", room_id], None)
        }
        AdminCommand::Invites(InvitesCommand::Create {
            room_id,
            expires,
            max_uses,
        }) => (
            Method::POST,
            vec!["rooms", room_id, "invites"],
            Some(json!({
                "expires_in_secs": expires.map(|d| Duration::from(d).as_secs().max(1)),
                "max_uses": max_uses,
            })),
        ),
        AdminCommand::Invites(InvitesCommand::List { room_id }) => {
            (Method::GET, vec!["rooms", room_id, "invites"], None)
        }
        AdminCommand::Invites(InvitesCommand::Revoke { invite_id }) => {
            (Method::DELETE, vec!["invites", invite_id], None)
        }
        AdminCommand::Users(UsersCommand::Kick { room_id, user_id }) => {
            (Method::POST, vec!["rooms", room_id, "kick", user_id], None)
        }
        AdminCommand::Sessions(SessionsCommand::List) => (Method::GET, vec!["sessions"], None),
        AdminCommand::Federation(PeersCommand::Peers) => {
            (Method::GET, vec!["federation", "peers"], None)
        }
        AdminCommand::Federation(PeersCommand::Deny { peer }) => (
            Method::POST,
            vec!["federation", "peers", peer, "deny"],
            None,
        ),
        AdminCommand::Federation(PeersCommand::Allow { peer }) => (
            Method::POST,
            vec!["federation", "peers", peer, "allow"],
            None,
        ),
        AdminCommand::Federation(PeersCommand::Retry { peer }) => (
            Method::POST,
            vec!["federation", "peers", peer, "retry"],
            None,
        ),
        AdminCommand::Keys(KeysCommand::Show) => (Method::GET, vec!["keys"], None),
        AdminCommand::Keys(KeysCommand::Rotate) => (Method::POST, vec!["keys", "rotate"], None),
        AdminCommand::Stats => (Method::GET, vec!["stats"], None),
    };
    let answer = client.call(method, &path, body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", render(&command, answer)?);
    Ok(())
}

/// The human form of an answer.
fn render(command: &AdminCommand, answer: Value) -> anyhow::Result<String> {
    let now = now_ms();
    Ok(match command {
        AdminCommand::Rooms(RoomsCommand::List) => {
            let rooms: Vec<RoomRow> = field(answer, "rooms")?;
            if rooms.is_empty() {
                return Ok("no rooms\n".to_owned());
            }
            table(
                &[
                    "ROOM",
                    "CONNECTED/JOINED",
                    "LOCKED",
                    "CREATED",
                    "EXPIRES IN",
                    "ORIGIN",
                ],
                rooms
                    .iter()
                    .map(|r| {
                        vec![
                            r.room_id.clone(),
                            format!("{}/{}", r.connected, r.joined),
                            yes_no(r.locked),
                            timestamp(r.created_ts),
                            expires_in(r.expires_ts, now),
                            r.origin.clone(),
                        ]
                    })
                    .collect(),
            )
        }
        AdminCommand::Rooms(RoomsCommand::Show { .. }) => {
            let d: RoomDetail = parse(answer)?;
            let r = &d.room;
            let mut out = table(
                &["", ""],
                vec![
                    vec!["room".into(), r.room_id.clone()],
                    vec!["origin".into(), r.origin.clone()],
                    vec!["host".into(), r.host.clone()],
                    vec!["locked".into(), yes_no(r.locked)],
                    vec!["created".into(), timestamp(r.created_ts)],
                    vec!["expires in".into(), expires_in(r.expires_ts, now)],
                    vec![
                        "connected/joined".into(),
                        format!("{}/{}", r.connected, r.joined),
                    ],
                    vec![
                        "activity".into(),
                        format!(
                            "{} events, latest #{}{}",
                            d.activity.events,
                            d.activity.latest_seq,
                            d.activity
                                .last_event_ts
                                .map_or_else(String::new, |ts| format!(
                                    " at {} ({})",
                                    timestamp(ts),
                                    d.activity.last_event_type.as_deref().unwrap_or("?")
                                ))
                        ),
                    ],
                ],
            )
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>();
            out.push_str("\nmembers\n");
            out.push_str(&table(
                &[
                    "USER",
                    "NAME",
                    "ROLE",
                    "MEMBERSHIP",
                    "HOME SERVER",
                    "DEVICES",
                ],
                d.members
                    .iter()
                    .map(|m| {
                        vec![
                            m.user_id.clone(),
                            m.display_name.clone(),
                            m.role.clone(),
                            m.membership.clone(),
                            m.home_server.clone(),
                            dash_if_empty(m.devices.join(",")),
                        ]
                    })
                    .collect(),
            ));
            out.push_str("\ninvites\n");
            out.push_str(&invites_table(&d.invites, now));
            out
        }
        AdminCommand::Rooms(RoomsCommand::Lock { room_id }) => format!("room {room_id} locked\n"),
        AdminCommand::Rooms(RoomsCommand::Unlock { room_id }) => {
            format!("room {room_id} unlocked\n")
        }
        AdminCommand::Rooms(RoomsCommand::Close { room_id }) => format!("room {room_id} closed\n"),
        AdminCommand::Invites(InvitesCommand::Create { .. }) => {
            let c: CreatedInvite = parse(answer)?;
            format!(
                "{}\ninvite {} (expires: {}, uses: {})\n",
                c.link,
                c.invite.invite_id,
                c.invite
                    .expires_ts
                    .map_or_else(|| "never".to_owned(), timestamp),
                c.invite
                    .max_uses
                    .map_or_else(|| "unlimited".to_owned(), |m| format!("at most {m}")),
            )
        }
        AdminCommand::Invites(InvitesCommand::List { .. }) => {
            let invites: Vec<InviteOut> = field(answer, "invites")?;
            invites_table(&invites, now)
        }
        AdminCommand::Invites(InvitesCommand::Revoke { invite_id }) => {
            format!("invite {invite_id} revoked\n")
        }
        AdminCommand::Users(UsersCommand::Kick { room_id, user_id }) => {
            let kicked: KickOut = serde_json::from_value(answer)?;
            if kicked.revoked_invites.is_empty() {
                format!("{user_id} kicked from {room_id}; no invite revoked\n")
            } else {
                format!(
                    "{user_id} kicked from {room_id}; invite {} revoked\n",
                    kicked.revoked_invites.join(", ")
                )
            }
        }
        AdminCommand::Sessions(SessionsCommand::List) => {
            let sessions: Vec<SessionRow> = field(answer, "sessions")?;
            if sessions.is_empty() {
                return Ok("no connected devices\n".to_owned());
            }
            table(
                &["USER", "DEVICE", "NAME", "ROOMS"],
                sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.user_id.clone(),
                            s.device_id.clone(),
                            s.display_name.clone(),
                            s.rooms.join(","),
                        ]
                    })
                    .collect(),
            )
        }
        AdminCommand::Federation(PeersCommand::Peers) => {
            let peers: Vec<PeerRow> = field(answer, "peers")?;
            if peers.is_empty() {
                return Ok("no federation peers yet\n".to_owned());
            }
            table(
                &[
                    "SERVER",
                    "QUEUED",
                    "FAILURES",
                    "LAST SUCCESS",
                    "LAST FAILURE",
                    "NEXT RETRY",
                    "DELIVERY",
                    "DROPPED",
                    "FEDERATION",
                ],
                peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.server.clone(),
                            p.queued.to_string(),
                            p.failures.to_string(),
                            p.last_success_ts.map_or_else(|| "-".to_owned(), timestamp),
                            p.last_failure_ts.map_or_else(|| "-".to_owned(), timestamp),
                            if p.backing_off {
                                expires_in(p.retry_after_ts, now)
                            } else {
                                "-".to_owned()
                            },
                            match (p.given_up_ts, p.failing_since_ts) {
                                (Some(ts), _) => format!("given up {}", timestamp(ts)),
                                (None, Some(ts)) => format!("failing since {}", timestamp(ts)),
                                (None, None) => "ok".to_owned(),
                            },
                            p.dropped.to_string(),
                            match &p.admin_override {
                                Some(o) => format!("{} (admin: {o})", p.federation),
                                None => p.federation.clone(),
                            },
                        ]
                    })
                    .collect(),
            )
        }
        AdminCommand::Federation(PeersCommand::Deny { peer }) => {
            format!("federation with {peer} denied\n")
        }
        AdminCommand::Federation(PeersCommand::Allow { peer }) => {
            format!("federation with {peer} allowed\n")
        }
        AdminCommand::Federation(PeersCommand::Retry { peer }) => {
            format!("retrying delivery to {peer} now\n")
        }
        AdminCommand::Keys(KeysCommand::Show) => {
            let k: KeysOut = parse(answer)?;
            let mut rows = vec![vec![
                k.current.key_id.clone(),
                k.current.public_key.clone(),
                format!(
                    "current, published valid until {}",
                    timestamp_u(k.valid_until_ts)
                ),
            ]];
            if let Some(pending) = &k.pending_key_id {
                rows.push(vec![
                    pending.clone(),
                    "-".into(),
                    "rotated in, used after the next restart".into(),
                ]);
            }
            rows.extend(k.old_keys.iter().map(|o| {
                vec![
                    o.key_id.clone(),
                    o.public_key.clone(),
                    format!(
                        "old, expired {}",
                        o.expired_ts.map_or_else(|| "?".into(), timestamp_u)
                    ),
                ]
            }));
            format!(
                "server name {}\n{}",
                k.server_name,
                table(&["KEY ID", "PUBLIC KEY", "STATUS"], rows)
            )
        }
        AdminCommand::Keys(KeysCommand::Rotate) => {
            let new: String = field(answer.clone(), "new_key_id")?;
            let old: String = field(answer, "signing_key_id")?;
            format!(
                "new signing key {new}; restart the server to use it (it signs with {old} until then)\n"
            )
        }
        AdminCommand::Stats => {
            let rooms: i64 = field(answer.clone(), "rooms")?;
            let federation: Value = field(answer.clone(), "federation")?;
            let figures: Vec<Figure> = field(answer, "metrics")?;
            let mut rows = vec![vec![
                "rooms (in the database)".to_owned(),
                rooms.to_string(),
            ]];
            if let Value::Object(map) = federation {
                rows.extend(map.iter().map(|(k, v)| {
                    vec![format!("federation {}", k.replace('_', " ")), v.to_string()]
                }));
            }
            rows.extend(figures.iter().map(|f| {
                let labels: Vec<String> =
                    f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let name = if labels.is_empty() {
                    f.name.clone()
                } else {
                    format!("{}{{{}}}", f.name, labels.join(","))
                };
                vec![name, number(f.value)]
            }));
            table(&["FIGURE", "VALUE"], rows)
        }
    })
}

fn invites_table(invites: &[InviteOut], now: i64) -> String {
    if invites.is_empty() {
        return "no invites\n".to_owned();
    }
    table(
        &["INVITE", "CREATED", "EXPIRES IN", "USES", "STATUS"],
        invites
            .iter()
            .map(|i| {
                let status = if i.revoked {
                    "revoked"
                } else if i.expires_ts.is_some_and(|t| t <= now) {
                    "expired"
                } else if i.max_uses.is_some_and(|m| i.uses >= m) {
                    "used up"
                } else {
                    "valid"
                };
                vec![
                    i.invite_id.clone(),
                    timestamp(i.created_ts),
                    expires_in(i.expires_ts, now),
                    match i.max_uses {
                        Some(m) => format!("{}/{m}", i.uses),
                        None => i.uses.to_string(),
                    },
                    status.to_owned(),
                ]
            })
            .collect(),
    )
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn now_ms() -> i64 {
    crate::time::now_ms()
}

fn timestamp(ms: i64) -> String {
    timestamp_u(u64::try_from(ms).unwrap_or(0))
}

fn timestamp_u(ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `29m 59s`, `now`, or `-` when there is no deadline.
fn expires_in(ts: Option<i64>, now: i64) -> String {
    match ts {
        None => "-".to_owned(),
        Some(t) if t <= now => "now".to_owned(),
        Some(t) => {
            let secs = u64::try_from((t - now) / 1000).unwrap_or(0);
            humantime::format_duration(Duration::from_secs(secs)).to_string()
        }
    }
}

fn parse<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("the server's answer is not what this version expects")
}

fn field<T: DeserializeOwned>(mut value: Value, name: &str) -> anyhow::Result<T> {
    parse(value.get_mut(name).map(Value::take).unwrap_or(Value::Null))
}

/// An HTTP client for one server's admin API.
struct AdminClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        // The configuration is read only when it is needed, so `--server` with the token in
        // the environment works without access to the server's configuration.
        let settings = if args.server.is_none() || env_token.is_none() || args.config.is_some() {
            Some(Settings::load(args.config.as_deref())?)
        } else {
            None
        };
        let token = match (env_token, &settings) {
            (Some(token), _) => token,
            (None, Some(s)) if !s.admin.token.is_empty() => s.admin.token.clone(),
            _ => bail!(
                "no admin token: set {TOKEN_ENV} or `admin.token` in the file given with --config"
            ),
        };
        let base = match (&args.server, &settings) {
            (Some(url), _) => url.clone(),
            (None, Some(s)) => match s.admin.listen {
                Some(listen) => local_url(listen),
                None => bail!(
                    "the configuration has no admin listener (`admin.listen` is empty), so the \
                     server has no admin API; give --server URL for another one"
                ),
            },
            (None, None) => bail!("no server: give --server URL or --config FILE"),
        };
        let base = Url::parse(&base).with_context(|| format!("invalid server URL {base:?}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("invalid server URL {base}: use http://host:port or https://host");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { base, token, http })
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("invalid server URL {}", self.base))?;
            path.pop_if_empty();
            path.extend(super::PREFIX.trim_start_matches('/').split('/'));
            path.extend(segments);
        }
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the server at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            anyhow::anyhow!(
                "the server at {} did not answer fully: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let reason = value
                .as_ref()
                .and_then(|v| v.get("reason"))
                .and_then(Value::as_str);
            let code = value
                .as_ref()
                .and_then(|v| v.get("code"))
                .and_then(Value::as_str);
            match (reason, code) {
                (Some(reason), Some(code)) => bail!("{} ({code})", one_line(reason)),
                _ => bail!(
                    "the server at {} answered {status} without an admin API error; is it a Confab server?",
                    self.base
                ),
            }
        }
        value.ok_or_else(|| anyhow::anyhow!("the server's answer is not JSON"))
    }
}

/// The URL of a server listening on `listen`, reached from this machine.
fn local_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// The innermost cause of an error, which names what actually failed (e.g. connection refused).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    one_line(&cause.to_string())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            vec![vec!["wide cell".into(), "x".into(), "last".into()]],
        );
        assert_eq!(
            t,
            "A          LONG HEADER  C\nwide cell  x            last\n"
        );
    }

    #[test]
    fn local_urls() {
        assert_eq!(
            local_url("0.0.0.0:8008".parse().unwrap()),
            "http://127.0.0.1:8008"
        );
        assert_eq!(local_url("[::]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            local_url("10.1.2.3:9".parse().unwrap()),
            "http://10.1.2.3:9"
        );
    }

    #[test]
    fn expiry_reads_as_a_duration() {
        assert_eq!(expires_in(None, 0), "-");
        assert_eq!(expires_in(Some(5), 10), "now");
        assert_eq!(expires_in(Some(90_500), 0), "1m 30s");
    }
}
