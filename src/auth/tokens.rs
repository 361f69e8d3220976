//! Access tokens (HS256 JWTs) and refresh tokens (opaque, stored hashed, rotated on use).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::users::Role;
use crate::store::now_ms;

/// Issuer claim of every access token.
const ISSUER: &str = "sparkbrain";

/// Claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// User name at issue time (informational; the role is re-read on every request).
    pub name: String,
    /// Role at issue time (informational).
    pub role: Role,
    /// Issued at (seconds).
    pub iat: i64,
    /// Issued at in milliseconds: a password change ends tokens issued before it, and whole
    /// seconds cannot order a change and a sign-in within the same second.
    pub iat_ms: i64,
    /// Expires at (seconds).
    pub exp: i64,
    /// Issuer.
    pub iss: String,
}

/// The HS256 signing key, generated on first start and kept 0600 in the data directory.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// Loads `<data_dir>/secrets/jwt.key`, creating it (64 random bytes, mode 0600) if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, AuthError> {
        let dir = data_dir.join("secrets");
        let path = dir.join("jwt.key");
        let key_err = |what: &str, e: std::io::Error| {
            AuthError::Key(format!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| key_err("cannot create the folder of", e))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 64];
                getrandom::fill(&mut key)
                    .map_err(|e| AuthError::Key(format!("no randomness available: {e}")))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| key_err("cannot create", e))?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| key_err("cannot write", e))?;
                tracing::info!(path = %path.display(), "generated a new token signing key");
                key
            }
            Err(e) => return Err(key_err("cannot read", e)),
        };
        if bytes.len() < 32 {
            return Err(AuthError::Key(format!(
                "{} holds {} bytes; a signing key needs at least 32 (delete it to generate a new one, which signs everyone out)",
                path.display(),
                bytes.len()
            )));
        }
        Ok(SigningKey {
            encoding: EncodingKey::from_secret(&bytes),
            decoding: DecodingKey::from_secret(&bytes),
        })
    }

    /// Signs an access token for the user, valid for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: i64,
        name: &str,
        role: Role,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        let iat_ms = now_ms();
        let iat = iat_ms / 1000;
        let claims = Claims {
            sub: user_id.to_string(),
            name: name.to_string(),
            role,
            iat,
            iat_ms,
            exp: iat + ttl_secs as i64,
            iss: ISSUER.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies signature, algorithm, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                AuthError::InvalidToken(match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        "the access token has expired; refresh it or sign in again"
                    }
                    ErrorKind::InvalidSignature => "the access token's signature is not valid",
                    ErrorKind::InvalidIssuer => {
                        "the access token was not issued by this sparkbrain"
                    }
                    _ => "the access token is malformed",
                })
            })
    }
}

/// SHA-256 hex of a high-entropy secret (refresh tokens, API keys); such secrets need no slow hash.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `prefix` + 64 hex digits (256 bits).
pub fn random_secret(prefix: &str) -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::Internal(format!("no randomness available: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Stores a new refresh token for the user and returns it.
pub fn create_refresh(conn: &Connection, user_id: i64, ttl_secs: u64) -> Result<String, AuthError> {
    let token = random_secret("rt_")?;
    let now = now_ms();
    conn.execute(
        "INSERT INTO refresh_tokens (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![user_id, secret_hash(&token), now, now + ttl_secs as i64 * 1000],
    )?;
    Ok(token)
}

/// Revokes a refresh token and returns its user id; errors say why it is not usable.
pub fn consume_refresh(conn: &Connection, token: &str) -> Result<i64, AuthError> {
    let row: Option<(i64, i64, i64, Option<i64>)> = conn
        .query_row(
            "SELECT id, user_id, expires_at, revoked_at FROM refresh_tokens WHERE token_hash = ?1",
            [secret_hash(token)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((id, user_id, expires_at, revoked_at)) = row else {
        return Err(AuthError::InvalidToken("the refresh token is not known"));
    };
    if revoked_at.is_some() {
        return Err(AuthError::InvalidToken(
            "the refresh token has been revoked; sign in again",
        ));
    }
    let now = now_ms();
    if expires_at <= now {
        return Err(AuthError::InvalidToken(
            "the refresh token has expired; sign in again",
        ));
    }
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?1 WHERE id = ?2",
        params![now, id],
    )?;
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_reject_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path()).unwrap();
        let token = key.issue(7, "ada", Role::Admin, 60).unwrap();
        let claims = key.verify(&token).unwrap();
        assert_eq!(claims.sub, "7");
        let mode = std::fs::metadata(dir.path().join("secrets/jwt.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let other_dir = tempfile::tempdir().unwrap();
        let other = SigningKey::load_or_create(other_dir.path()).unwrap();
        assert!(matches!(
            other.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        // The same key is read back after a restart.
        let again = SigningKey::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token).is_ok());
    }
}
