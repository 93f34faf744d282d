//! Confab's server-to-server protocol, kept free of any web framework so that it can be tested
//! and fuzzed on its own: identifiers, and (in the modules below) canonical JSON, ed25519 signing,
//! X-Matrix request authentication, server keys and the cache of other servers' keys, server
//! discovery, the federation address and server policy, backoff, and the transaction wire types.

pub mod ids;

// federation protocol modules
pub mod backoff;
pub mod canonical_json;
pub mod discovery;
pub mod key_cache;
pub mod keys;
pub mod policy;
pub mod signing;
pub mod transaction;
pub mod unpadded_base64;
pub mod xmatrix;
