//! `confab federation …`: debugging tools for the signing rules (reproduce the spec's test
//! vectors, check a peer's signatures by hand, build an Authorization header) and for a running
//! server (send a signed request with its key, rotate its key). Part of the command line, so
//! errors are `anyhow` and go to stderr with exit status 1.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use confab_federation::canonical_json::to_canonical_string;
use confab_federation::ids::ServerName;
use confab_federation::signing::{KeyId, SigningKey, VerifyKey, sign_json, verify_json};
use confab_federation::unpadded_base64;
use confab_federation::xmatrix::sign_request;
use serde_json::Value;

use super::Federation;
use super::identity::ServerIdentity;
use crate::config::Settings;

/// The `federation` subcommands.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Sign a JSON object (FILE, or stdin) and print it signed, as canonical JSON.
    SignJson {
        /// The 32-byte ed25519 seed, in (unpadded) base64.
        #[arg(long)]
        seed: String,
        /// The key id, `ed25519:<version>`.
        #[arg(long)]
        key_id: String,
        /// The server name to sign as.
        #[arg(long)]
        server_name: String,
        /// The JSON file; stdin if absent.
        file: Option<PathBuf>,
    },
    /// Check a server's signature on a JSON object (FILE, or stdin); prints `valid`, or says
    /// why not and exits with status 1.
    VerifyJson {
        /// The ed25519 public key, in (unpadded) base64.
        #[arg(long)]
        key: String,
        /// The key id, `ed25519:<version>`.
        #[arg(long)]
        key_id: String,
        /// The server whose signature to check.
        #[arg(long)]
        server_name: String,
        /// The JSON file; stdin if absent.
        file: Option<PathBuf>,
    },
    /// Print the `Authorization: X-Matrix …` header value for a request.
    SignRequest {
        /// The 32-byte ed25519 seed, in (unpadded) base64.
        #[arg(long)]
        seed: String,
        /// The key id, `ed25519:<version>`.
        #[arg(long)]
        key_id: String,
        /// The sending server.
        #[arg(long)]
        origin: String,
        /// The receiving server.
        #[arg(long)]
        destination: String,
        /// The HTTP method.
        #[arg(long)]
        method: String,
        /// The request target: path and query, e.g. `/_matrix/federation/v1/send/1`.
        #[arg(long)]
        uri: String,
        /// A file with the JSON body, if the request has one.
        #[arg(long)]
        content: Option<PathBuf>,
    },
    /// Send a signed request to another server with this server's key (from the data
    /// directory of the configuration) and print the answer; exits with status 1 unless 2xx.
    Request {
        /// The destination server name.
        #[arg(long)]
        to: String,
        /// The HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request target: path and query.
        #[arg(long)]
        path: String,
        /// A file with the JSON body, if the request has one.
        #[arg(long)]
        content: Option<PathBuf>,
        /// The configuration file of the server to act as.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Retire this server's signing key (still published as an old key) and make a new one.
    /// Takes effect when the server (re)starts.
    RotateKey {
        /// The configuration file of the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Runs one subcommand.
pub fn run(command: FederationCommand) -> anyhow::Result<()> {
    match command {
        FederationCommand::SignJson {
            seed,
            key_id,
            server_name,
            file,
        } => {
            let key = signing_key(&seed, &key_id)?;
            let mut value = read_json(file.as_deref())?;
            sign_json(&mut value, &server_name_arg(&server_name)?, &key)?;
            println!("{}", to_canonical_string(&value)?);
            Ok(())
        }
        FederationCommand::VerifyJson {
            key,
            key_id,
            server_name,
            file,
        } => {
            let key = VerifyKey::from_base64(&key)
                .map_err(|_| anyhow::anyhow!("--key is not 32 bytes of base64"))?;
            let key_id = KeyId::parse(&key_id)?;
            let value = read_json(file.as_deref())?;
            verify_json(&value, &server_name_arg(&server_name)?, &key_id, &key)
                .context("invalid")?;
            println!("valid");
            Ok(())
        }
        FederationCommand::SignRequest {
            seed,
            key_id,
            origin,
            destination,
            method,
            uri,
            content,
        } => {
            let key = signing_key(&seed, &key_id)?;
            let content = content.as_deref().map(|f| read_json(Some(f))).transpose()?;
            let auth = sign_request(
                &server_name_arg(&origin)?,
                &server_name_arg(&destination)?,
                &method,
                &uri,
                content.as_ref(),
                &key,
            )?;
            println!("{auth}");
            Ok(())
        }
        FederationCommand::Request {
            to,
            method,
            path,
            content,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let identity =
                ServerIdentity::load(&settings.server.data_dir, settings.server.name.clone())?;
            let federation = Federation::new(&settings, identity)?;
            let destination = server_name_arg(&to)?;
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| anyhow::anyhow!("invalid --method {method:?}"))?;
            let content = content.as_deref().map(|f| read_json(Some(f))).transpose()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let response = runtime.block_on(federation.client.request(
                &destination,
                method,
                &path,
                content.as_ref(),
            ))?;
            eprintln!("HTTP {}", response.status);
            println!("{}", serde_json::to_string_pretty(&response.body)?);
            if !(200..300).contains(&response.status) {
                anyhow::bail!("{to} answered {}", response.status);
            }
            Ok(())
        }
        FederationCommand::RotateKey { config } => {
            let settings = Settings::load(config.as_deref())?;
            let identity = ServerIdentity::rotate(
                &settings.server.data_dir,
                settings.server.name.clone(),
                super::now_ms(),
            )?;
            println!(
                "new signing key {} (restart the server to use it)",
                identity.key.key_id()
            );
            Ok(())
        }
    }
}

fn signing_key(seed: &str, key_id: &str) -> anyhow::Result<SigningKey> {
    let seed = unpadded_base64::decode_array(seed)
        .map_err(|_| anyhow::anyhow!("--seed is not 32 bytes of base64"))?;
    Ok(SigningKey::from_seed(KeyId::parse(key_id)?, seed)?)
}

fn server_name_arg(name: &str) -> anyhow::Result<ServerName> {
    ServerName::parse(name).with_context(|| format!("{name:?} is not a valid server name"))
}

fn read_json(file: Option<&Path>) -> anyhow::Result<Value> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    serde_json::from_str(&text).context("the input is not JSON")
}
