//! TURN credentials only for participants, checked through a real coturn (Debian's `turnserver`;
//! `make coturn` installs it): the homeserver hands credentials to joined members of a live room
//! and to nobody else, and coturn, with the peer rules of `docker/turnserver.conf` plus the one
//! loopback address these tests relay to, relays to that address and refuses every other
//! loopback, private and metadata address.
//!
//! The TURN client here is hand-written (RFC 8489 STUN, RFC 8656 TURN, long-term credentials):
//! Allocate, CreatePermission, Send and Data indications over UDP, which is all it needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;

use md5::Digest as _;
use serde_json::{Value, json};
use support::{PATIENCE, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;

/// The one loopback address the test coturn may relay to (as the browser test's may).
const ALLOWED_PEER: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ---- coturn -------------------------------------------------------------------------------

/// A `turnserver` on 127.0.0.1, killed when dropped.
struct Coturn {
    child: tokio::process::Child,
    addr: SocketAddr,
    secret: String,
    _dir: tempfile::TempDir,
}

/// The peer rules of the compose file's coturn, which are the README's production ones.
fn shipped_peer_rules() -> Vec<String> {
    let conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/turnserver.conf"),
    )
    .unwrap();
    let rules: Vec<String> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("denied-peer-ip=") || *l == "no-multicast-peers")
        .map(|l| format!("--{l}"))
        .collect();
    assert!(rules.len() > 20, "{rules:?}");
    rules
}

impl Coturn {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = nix::unistd::Uid::effective().is_root();
        const NOBODY: u32 = 65534;
        if root {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        // A free UDP port (coturn listens on TCP too; a clash there makes it fail loudly).
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secret = format!(
            "turn-secret-{}",
            confab_federation::ids::random_alphanumeric(16)
        );
        let mut cmd = tokio::process::Command::new("turnserver");
        cmd.args(["-n", "-v", "--log-file", "stdout"])
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args(["--use-auth-secret", "--realm", "confab.test"])
            .arg(format!("--static-auth-secret={secret}"))
            .args(["--no-tls", "--no-dtls", "--no-cli"])
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turnserver.pid").display()
            ))
            .arg(format!("--db={}", dir.path().join("turndb").display()))
            // Loopback peers are off unless allowed; then exactly one address is whitelisted,
            // and the shipped rules deny the rest of 127.0.0.0/8 with every other range.
            .arg("--allow-loopback-peers")
            .arg(format!("--allowed-peer-ip={ALLOWED_PEER}"))
            .args(shipped_peer_rules())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if root {
            // As the browser test does: coturn needs no privilege on these ports.
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run turnserver ({e}): install coturn (`make coturn`)")
        });
        // Ready once its UDP listener is bound: from then on a request waits in the socket's
        // queue until coturn reads it, so no retries are needed.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("UDP listener opened on") {
                    return true;
                }
                seen.push(line);
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "coturn did not open its UDP listener:\n{}",
            seen.join("\n")
        );
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            secret,
            _dir: dir,
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// ---- STUN and TURN messages ---------------------------------------------------------------

const MAGIC_COOKIE: u32 = 0x2112_A442;
const ALLOCATE: u16 = 0x0003;
const CREATE_PERMISSION: u16 = 0x0008;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;

/// A STUN message being written.
struct Message {
    kind: u16,
    transaction: [u8; 12],
    attributes: Vec<u8>,
}

impl Message {
    fn new(kind: u16) -> Self {
        Self {
            kind,
            transaction: rand::random(),
            attributes: Vec::new(),
        }
    }

    fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        self.attributes.extend_from_slice(&kind.to_be_bytes());
        self.attributes
            .extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        self.attributes.extend_from_slice(value);
        while !self.attributes.len().is_multiple_of(4) {
            self.attributes.push(0);
        }
        self
    }

    fn header(&self, length: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + length);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&u16::try_from(length).unwrap().to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction);
        out
    }

    /// The bytes, unsigned.
    fn plain(&self) -> Vec<u8> {
        let mut out = self.header(self.attributes.len());
        out.extend_from_slice(&self.attributes);
        out
    }

    /// The bytes with MESSAGE-INTEGRITY under the long-term credential `key` (RFC 8489 §14.5:
    /// HMAC-SHA1 over the message up to the attribute, its length already counting it).
    fn signed(&self, key: &[u8]) -> Vec<u8> {
        let mut out = self.header(self.attributes.len() + 24);
        out.extend_from_slice(&self.attributes);
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = ring::hmac::sign(&hmac, &out);
        out.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        out.extend_from_slice(&20u16.to_be_bytes());
        out.extend_from_slice(tag.as_ref());
        out
    }
}

/// XOR-MAPPED-ADDRESS-style encoding of an IPv4 address (RFC 8489 §14.2).
fn xor_address(addr: SocketAddrV4) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = u32::from(*addr.ip()) ^ MAGIC_COOKIE;
    let mut out = vec![0, 0x01];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip.to_be_bytes());
    out
}

fn parse_xor_address(value: &[u8]) -> SocketAddrV4 {
    assert_eq!(value[1], 0x01, "an IPv4 address");
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// A received STUN message.
#[derive(Debug)]
struct Answer {
    kind: u16,
    transaction: [u8; 12],
    attributes: Vec<(u16, Vec<u8>)>,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Self {
        assert!(bytes.len() >= 20, "short STUN message: {bytes:?}");
        let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
        let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        assert_eq!(bytes.len(), 20 + length);
        let transaction = bytes[8..20].try_into().unwrap();
        let mut attributes = Vec::new();
        let mut rest = &bytes[20..];
        while rest.len() >= 4 {
            let kind = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            attributes.push((kind, rest[4..4 + len].to_vec()));
            rest = &rest[(4 + len).next_multiple_of(4).min(rest.len())..];
        }
        Self {
            kind,
            transaction,
            attributes,
        }
    }

    fn get(&self, kind: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }

    /// The ERROR-CODE's number (e.g. 401, 403), if it is an error answer.
    fn error_code(&self) -> Option<u16> {
        self.get(ERROR_CODE)
            .map(|v| u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
    }
}

/// A TURN client with one allocation on `server`, using long-term credentials.
struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: [u8; 16],
}

/// What an Allocate with some credentials came to.
enum Allocation {
    Granted(TurnClient, SocketAddrV4),
    Refused(u16),
}

impl TurnClient {
    /// Sends `message` and waits for the answer to it.
    async fn exchange(socket: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> Answer {
        let transaction: [u8; 12] = bytes[8..20].try_into().unwrap();
        socket.send_to(bytes, server).await.unwrap();
        let mut buf = vec![0; 2048];
        loop {
            let (n, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
                .await
                .expect("coturn answered in time")
                .unwrap();
            assert_eq!(from, server);
            let answer = Answer::parse(&buf[..n]);
            // Data indications may arrive between requests; they are not answers.
            if answer.transaction == transaction {
                return answer;
            }
        }
    }

    /// Allocates a UDP relay with `username` and `password` (the TURN REST credentials).
    async fn allocate(server: SocketAddr, username: &str, password: &str) -> Allocation {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = [17, 0, 0, 0];
        // The first attempt carries no credentials: the 401 gives the realm and a nonce.
        let challenge = Self::exchange(
            &socket,
            server,
            &Message::new(ALLOCATE)
                .attribute(REQUESTED_TRANSPORT, &udp)
                .plain(),
        )
        .await;
        assert_eq!(challenge.error_code(), Some(401), "{challenge:?}");
        let realm = challenge.get(REALM).unwrap().to_vec();
        let nonce = challenge.get(NONCE).unwrap().to_vec();
        let mut md5 = md5::Md5::new();
        md5.update(username.as_bytes());
        md5.update(b":");
        md5.update(&realm);
        md5.update(b":");
        md5.update(password.as_bytes());
        let key: [u8; 16] = md5.finalize().into();
        let client = Self {
            socket,
            server,
            username: username.to_owned(),
            realm,
            nonce,
            key,
        };
        let answer = client
            .request(Message::new(ALLOCATE).attribute(REQUESTED_TRANSPORT, &udp))
            .await;
        match answer.error_code() {
            None => {
                assert_eq!(answer.kind, ALLOCATE | SUCCESS, "{answer:?}");
                let relayed = parse_xor_address(answer.get(XOR_RELAYED_ADDRESS).unwrap());
                Allocation::Granted(client, relayed)
            }
            Some(code) => {
                assert_eq!(answer.kind, ALLOCATE | ERROR, "{answer:?}");
                Allocation::Refused(code)
            }
        }
    }

    /// Sends an authenticated request; returns the answer.
    async fn request(&self, message: Message) -> Answer {
        let message = message
            .attribute(USERNAME, self.username.as_bytes())
            .attribute(REALM, &self.realm)
            .attribute(NONCE, &self.nonce);
        Self::exchange(&self.socket, self.server, &message.signed(&self.key)).await
    }

    /// CreatePermission for `peer`: `Ok` when granted, else the error code.
    async fn permit(&self, peer: SocketAddrV4) -> Result<(), u16> {
        let answer = self
            .request(
                Message::new(CREATE_PERMISSION).attribute(XOR_PEER_ADDRESS, &xor_address(peer)),
            )
            .await;
        match answer.error_code() {
            None => {
                assert_eq!(answer.kind, CREATE_PERMISSION | SUCCESS, "{answer:?}");
                Ok(())
            }
            Some(code) => Err(code),
        }
    }

    /// Relays `data` to `peer` (a Send indication; needs a permission).
    async fn send(&self, peer: SocketAddrV4, data: &[u8]) {
        let message = Message::new(SEND_INDICATION)
            .attribute(XOR_PEER_ADDRESS, &xor_address(peer))
            .attribute(DATA, data)
            .plain();
        self.socket.send_to(&message, self.server).await.unwrap();
    }

    /// The next Data indication: who sent what through the relay.
    async fn receive(&self) -> (SocketAddrV4, Vec<u8>) {
        let mut buf = vec![0; 2048];
        let (n, _) = tokio::time::timeout(PATIENCE, self.socket.recv_from(&mut buf))
            .await
            .expect("relayed data in time")
            .unwrap();
        let answer = Answer::parse(&buf[..n]);
        assert_eq!(answer.kind, DATA_INDICATION, "{answer:?}");
        (
            parse_xor_address(answer.get(XOR_PEER_ADDRESS).unwrap()),
            answer.get(DATA).unwrap().to_vec(),
        )
    }
}

// ---- the tests ----------------------------------------------------------------------------

async fn server_with_turn(coturn: &Coturn) -> TestServer {
    let turn_url = format!("turn:{}?transport=udp", coturn.addr);
    TestServer::start_with(&[
        ("CONFAB__ICE__STUN_URLS", &format!("stun:{}", coturn.addr)),
        ("CONFAB__ICE__TURN_URLS", &turn_url),
        ("CONFAB__ICE__TURN_SECRET", &coturn.secret),
    ])
    .await
}

fn ice_path(room: &str) -> String {
    format!("/rooms/{room}/ice_servers")
}

/// The TURN entry of an `ice_servers` list: its username and password.
fn turn_entry(servers: &Value) -> (String, String) {
    let turn = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["urls"][0].as_str().unwrap().starts_with("turn:"))
        .unwrap_or_else(|| panic!("no TURN entry in {servers}"));
    (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn only_joined_members_of_a_live_room_get_turn_credentials() {
    let coturn = Coturn::start().await;
    let s = server_with_turn(&coturn).await;
    let (room, guests) = s.room_with(1).await;
    let (host, member) = (&guests[0], &guests[1]);
    let stranger = s.guest("Stranger").await;
    let stun = json!({ "urls": [format!("stun:{}", coturn.addr)] });

    // Nobody gets TURN from the public configuration, with or without a session.
    let (_, config) = s.call(reqwest::Method::GET, "/config", None, None).await;
    assert_eq!(config["ice_servers"], json!([stun]));
    let (_, config) = s.get("/config", &stranger.token).await;
    assert_eq!(config["ice_servers"], json!([stun]));

    // No session, another room's session, a room that does not exist: refused.
    let (status, body) = s
        .call(reqwest::Method::GET, &ice_path(&room), None, None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, body) = s.get(&ice_path(&room), "not-a-token").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, body) = s.get(&ice_path(&room), &stranger.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_member")),
        "{body}"
    );
    let nowhere = format!("!nosuchroom:{}", s.server_name());
    let (status, body) = s.get(&ice_path(&nowhere), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found")),
        "{body}"
    );
    let (status, body) = s.get(&ice_path("not-a-room"), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_room_id")),
        "{body}"
    );

    // A member gets STUN and TURN, for an hour by default, and not for caches.
    let res = s
        .http
        .get(format!("{}/_confab/client/v1{}", s.base, ice_path(&room)))
        .bearer_auth(&member.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap(),
        "no-store"
    );
    let grant: Value = res.json().await.unwrap();
    assert_eq!(grant["expires_in_ms"], 3_600_000);
    assert_eq!(grant["ice_servers"][0], stun);
    let (username, password) = turn_entry(&grant["ice_servers"]);
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, member.user_id);
    let expiry: u64 = expiry.parse().unwrap();
    let now = u64::try_from(confab::time::now_ms() / 1000).unwrap();
    assert!(
        (now + 3590..=now + 3600).contains(&expiry),
        "{expiry} vs {now}"
    );
    // And they work at coturn.
    assert!(matches!(
        TurnClient::allocate(coturn.addr, &username, &password).await,
        Allocation::Granted(..)
    ));

    // Left, kicked, or the room past its countdown or closed: no more credentials.
    let (status, _) = s
        .post(&format!("/rooms/{room}/leave"), &member.token, json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, body) = s.get(&ice_path(&room), &member.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_member")),
        "{body}"
    );
    let kicked = s.guest("Kicked").await;
    s.join_with_invite(host, &kicked, &room).await;
    assert_eq!(s.get(&ice_path(&room), &kicked.token).await.0, 200);
    let (status, _) = s
        .post(
            &format!("/rooms/{room}/kick"),
            &host.token,
            json!({ "user_id": kicked.user_id }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.get(&ice_path(&room), &kicked.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_member")),
        "{body}"
    );

    let mut db = confab_schema::connect(&s.state.pool).await.unwrap();
    confab_schema::queries::set_room_expiry(&mut db, &room, Some(1))
        .await
        .unwrap()
        .unwrap();
    let (status, body) = s.get(&ice_path(&room), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found")),
        "{body}"
    );
    confab_schema::queries::set_room_expiry(&mut db, &room, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get(&ice_path(&room), &host.token).await.0, 200);
    assert_eq!(
        s.delete(&format!("/rooms/{room}"), &host.token).await.0,
        204
    );
    let (status, body) = s.get(&ice_path(&room), &host.token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn coturn_relays_to_the_allowed_address_only() {
    let coturn = Coturn::start().await;
    let s = server_with_turn(&coturn).await;
    let (room, guests) = s.room_with(0).await;
    let (_, grant) = s.get(&ice_path(&room), &guests[0].token).await;
    let (username, password) = turn_entry(&grant["ice_servers"]);

    // Credentials coturn must refuse: a wrong password, and a right one that has expired.
    assert!(matches!(
        TurnClient::allocate(coturn.addr, &username, "d3Jvbmc=").await,
        Allocation::Refused(401)
    ));
    let past = u64::try_from(confab::time::now_ms() / 1000).unwrap() - 60;
    let (old_user, old_pass) =
        confab::turn::turn_credential(&coturn.secret, past, &guests[0].user_id);
    assert!(matches!(
        TurnClient::allocate(coturn.addr, &old_user, &old_pass).await,
        Allocation::Refused(401)
    ));

    let Allocation::Granted(client, relayed) =
        TurnClient::allocate(coturn.addr, &username, &password).await
    else {
        panic!("the member's credentials were refused");
    };
    assert_eq!(*relayed.ip(), Ipv4Addr::LOCALHOST);

    // The allowed loopback address: permitted, and data flows both ways through the relay.
    let peer = UdpSocket::bind((ALLOWED_PEER, 0)).await.unwrap();
    let SocketAddr::V4(peer_addr) = peer.local_addr().unwrap() else {
        unreachable!()
    };
    assert_eq!(client.permit(peer_addr).await, Ok(()));
    client.send(peer_addr, b"through the relay").await;
    let mut buf = [0; 64];
    let (n, from) = tokio::time::timeout(PATIENCE, peer.recv_from(&mut buf))
        .await
        .expect("relayed in time")
        .unwrap();
    assert_eq!(&buf[..n], b"through the relay");
    assert_eq!(from, SocketAddr::V4(relayed));
    peer.send_to(b"and back", from).await.unwrap();
    assert_eq!(client.receive().await, (peer_addr, b"and back".to_vec()));

    // Any other loopback address, private networks, CGNAT, link-local and the cloud metadata
    // addresses, "this network", multicast: 403 Forbidden.
    for ip in [
        "127.0.0.2",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "100.100.100.200",
        "169.254.169.254",
        "192.0.0.192",
        "0.0.0.1",
        "224.0.0.251",
    ] {
        let denied = SocketAddrV4::new(ip.parse().unwrap(), peer_addr.port());
        assert_eq!(
            client.permit(denied).await,
            Err(403),
            "a permission for {ip}"
        );
    }
    // The refusals took nothing from the permitted peer.
    client.send(peer_addr, b"still relayed").await;
    let (n, _) = tokio::time::timeout(PATIENCE, peer.recv_from(&mut buf))
        .await
        .expect("relayed in time")
        .unwrap();
    assert_eq!(&buf[..n], b"still relayed");
}
