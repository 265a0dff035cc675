//! Key pairs made fresh for each test run (RSA, P-256, Ed25519), with their public JWKs and
//! PEMs, and tokens signed with them, as an identity provider would issue.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use serde_json::{json, Value};

pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    pub public_pem: String,
}

/// RSA generation takes a while: two RSA keys serve every test.
pub fn rsa(which: usize) -> &'static TestKey {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    &KEYS.get_or_init(|| [TestKey::rsa("rsa-a"), TestKey::rsa("rsa-b")])[which]
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        let pair = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let (n, e) = rsa_components(pair.public_key_raw());
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(n), "e": b64(e)}),
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn ec(kid: &str) -> TestKey {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw(); // 0x04 || x || y
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn ed(kid: &str) -> TestKey {
        let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                        "x": b64(pair.public_key_raw())}),
            public_pem: pair.public_key_pem(),
        }
    }

    /// A token with this key's `kid` and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Claims an issuer would put in a token: `sub`, `iss`, `aud`, an `exp` an hour away.
pub fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    json!({"sub": sub, "iss": iss, "aud": aud, "iat": now(), "exp": now() + 3600})
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` and `e` of a PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e } in DER.
fn rsa_components(der: &[u8]) -> (&[u8], &[u8]) {
    fn element(der: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(der[0], tag);
        let (len, start) = match der[1] {
            short if short < 0x80 => (short as usize, 2),
            long => {
                let bytes = (long & 0x7f) as usize;
                let len = der[2..2 + bytes]
                    .iter()
                    .fold(0usize, |acc, b| acc << 8 | *b as usize);
                (len, 2 + bytes)
            }
        };
        (&der[start..start + len], &der[start + len..])
    }
    let (sequence, _) = element(der, 0x30);
    let (n, rest) = element(sequence, 0x02);
    let (e, _) = element(rest, 0x02);
    (trim_zero(n), trim_zero(e))
}

fn trim_zero(integer: &[u8]) -> &[u8] {
    match integer {
        [0, rest @ ..] => rest,
        other => other,
    }
}
