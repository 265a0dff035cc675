//! API keys: the config holds only each key's SHA-256, so a leaked config leaks no key. A
//! presented key is hashed and looked up; the hash map compares digests, not the secrets.

use std::collections::HashMap;

use aws_lc_rs::digest;

use crate::config::ApiKeyConfig;

#[derive(Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], ApiKeyConfig>,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKeyConfig]) -> ApiKeys {
        ApiKeys {
            by_hash: keys.iter().map(|k| (k.sha256, k.clone())).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn find(&self, presented: &[u8]) -> Option<&ApiKeyConfig> {
        let digest = digest::digest(&digest::SHA256, presented);
        let hash: [u8; 32] = digest.as_ref().try_into().ok()?;
        self.by_hash.get(&hash)
    }
}
