//! Identity: users, roles, groups, sign-in, JWT access tokens, refresh tokens, API keys, sign-in
//! rate limits and the audit log.
//!
//! Every decision that denies and every admin action is written to the audit log here, so the
//! HTTP layer cannot forget to.

pub mod api_keys;
pub mod audit;
pub mod password;
mod rate_limit;
pub mod tokens;
pub mod unlockers;
pub mod users;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;
use sha2::Digest;

use crate::config::AuthConfig;
use crate::store::{Store, StoreError};
pub use api_keys::{ApiKey, KEY_PREFIX};
pub use audit::{AuditEntry, AuditEvent, AuditQuery, Outcome};
use rate_limit::{DenialThrottle, LoginLimiter};

/// Denials of unauthenticated requests written to the audit log per source address per minute.
const DENIALS_AUDITED_PER_MINUTE: u32 = 30;
use tokens::SigningKey;
pub use users::{Group, Role, User};

/// Errors of the identity capability.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user name or password (deliberately not saying which).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// Too many failed sign-ins.
    #[error("too many failed sign-ins; try again in {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// No credentials were presented.
    #[error(
        "this route needs authentication: send `Authorization: Bearer <access token or API key>`"
    )]
    MissingCredentials,
    /// The presented token or key is not valid; the text says why.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such user, group or key.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// The signing key could not be loaded or created.
    #[error("token signing key: {0}")]
    Key(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else on the daemon's side failed.
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        AuthError::Store(StoreError::Sqlite(e))
    }
}

/// Who is calling, as established by [`Auth::authenticate`].
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// User id.
    pub user_id: i64,
    /// User name.
    pub name: String,
    /// Current role (read from the store on every request).
    pub role: Role,
    /// The API key used, if the call came with one.
    pub api_key_id: Option<i64>,
}

impl Principal {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The actor as written in the audit log.
    pub fn actor(&self) -> String {
        match self.api_key_id {
            Some(id) => format!("{} (key {id})", self.name),
            None => self.name.clone(),
        }
    }
}

/// What the audit log needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Source address.
    pub source: Option<IpAddr>,
    /// Method and route template, e.g. `GET /api/v1/users`.
    pub route: String,
}

/// The answer to a successful sign-in or refresh (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    /// The JWT access token.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (single use).
    pub refresh_token: String,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// New role (admin only).
    pub role: Option<Role>,
    /// New password.
    pub password: Option<String>,
    /// The caller's current password, required when users change their own password.
    pub current_password: Option<String>,
    /// Enable or disable (admin only).
    pub disabled: Option<bool>,
}

/// The identity capability.
pub struct Auth {
    store: Store,
    config: AuthConfig,
    key: SigningKey,
    limiter: LoginLimiter,
    denials: DenialThrottle,
    unlockers: Option<PathBuf>,
    /// SHA-256 of this run's local token, see [`Auth::issue_local_token`].
    local_token: Option<[u8; 32]>,
}

/// Where the daemon writes its local token, relative to the data directory (root-only).
pub const LOCAL_TOKEN_FILE: &str = "secrets/local-admin.token";
const LOCAL_TOKEN_PREFIX: &str = "sblocal_";
/// The only routes the local token opens.
const LOCAL_TOKEN_ROUTES: &[&str] = &["GET /api/v1/backups", "POST /api/v1/backups"];
/// How the local token's caller is named in the audit log.
pub const LOCAL_ADMIN: &str = "root (local token)";

impl Auth {
    /// Opens the capability over the store, loading or creating the signing key.
    pub fn new(store: Store, config: AuthConfig, data_dir: &Path) -> Result<Auth, AuthError> {
        let key = SigningKey::load_or_create(data_dir)?;
        let limiter = LoginLimiter::new(
            Duration::from_secs(config.login_window_seconds),
            config.login_max_failures_per_account,
            config.login_max_failures_per_address,
        );
        Ok(Auth {
            store,
            config,
            key,
            limiter,
            denials: DenialThrottle::new(Duration::from_secs(60), DENIALS_AUDITED_PER_MINUTE),
            unlockers: None,
            local_token: None,
        })
    }

    /// Writes a fresh random token into [`LOCAL_TOKEN_FILE`] (mode 0600) for this run. Root on
    /// the box reads it, so `sparkbrain backup create` (and the scheduled backup service) work
    /// without an API key; it opens the backup routes only, and dies with the daemon.
    pub fn issue_local_token(&mut self, data_dir: &Path) -> Result<(), AuthError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| AuthError::Internal(format!("no randomness for the local token: {e}")))?;
        let token = format!("{LOCAL_TOKEN_PREFIX}{}", hex::encode(bytes));
        let path = data_dir.join(LOCAL_TOKEN_FILE);
        crate::store::write_private(&path, token.as_bytes())
            .map_err(|e| AuthError::Internal(format!("cannot write {}: {e}", path.display())))?;
        self.local_token = Some(sha2::Sha256::digest(token.as_bytes()).into());
        Ok(())
    }

    /// Keeps the admins who may unlock the data volume in `path`, now and after every change
    /// to users (see [`unlockers`]).
    pub async fn keep_unlockers(&mut self, path: PathBuf) {
        self.unlockers = Some(path);
        self.refresh_unlockers().await;
    }

    async fn refresh_unlockers(&self) {
        let Some(path) = self.unlockers.clone() else {
            return;
        };
        let written = self
            .store
            .run(move |c| Ok::<_, StoreError>(unlockers::export(c, &path)))
            .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot record the admins who may unlock the data volume")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the admins who may unlock the data volume")
            }
        }
    }

    /// Writes an audit event. A failure to audit is logged, not returned: the decision stands.
    async fn audit(&self, event: AuditEvent) {
        let action = event.action;
        let result = self
            .store
            .run(move |c| audit::record(c, &event).map_err(StoreError::from))
            .await;
        if let Err(e) = result {
            tracing::error!(action, error = %e, "cannot write audit event");
        }
    }

    /// Audits a denial of an unauthenticated request, within the per-source throttle.
    async fn audit_denial(&self, mut event: AuditEvent, ctx: &RequestContext) {
        let Some(dropped) = self.denials.admit(ctx.source) else {
            return;
        };
        if dropped > 0 {
            let note = format!(
                "{dropped} earlier denials from this address were not recorded (over {DENIALS_AUDITED_PER_MINUTE}/min)"
            );
            event.detail = Some(match event.detail {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
        }
        self.audit(event).await;
    }

    fn event(
        actor: Option<String>,
        action: &'static str,
        target: Option<String>,
        outcome: Outcome,
        ctx: &RequestContext,
        detail: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            actor,
            action,
            target,
            outcome,
            source: ctx.source.map(|ip| ip.to_string()),
            detail,
        }
    }

    /// Checks a new password against the policy.
    pub fn check_password_policy(&self, password: &str) -> Result<(), AuthError> {
        check_password_policy(password, self.config.min_password_length)
    }

    /// OAuth2 password grant: checks the rate limits and the password, returns tokens.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        ctx: &RequestContext,
    ) -> Result<TokenPair, AuthError> {
        if let Err(wait) = self.limiter.check(name, ctx.source) {
            let retry_after = wait.as_secs().max(1);
            self.deny_login(name, ctx, "rate limited: too many failed sign-ins")
                .await;
            return Err(AuthError::RateLimited { retry_after });
        }
        let lookup = name.to_string();
        let creds = self
            .store
            .run(move |c| users::credentials_by_name(c, &lookup).map_err(AuthError::from))
            .await?;
        let hash = creds.as_ref().map_or_else(
            || password::decoy_hash().to_string(),
            |c| c.password_hash.clone(),
        );
        let candidate = password.to_string();
        let matches = tokio::task::spawn_blocking(move || password::verify(&candidate, &hash))
            .await
            .map_err(|e| AuthError::Internal(format!("password check failed: {e}")))?;
        let reason = match &creds {
            None => Some("unknown user"),
            Some(_) if !matches => Some("wrong password"),
            Some(c) if c.disabled => Some("user is disabled"),
            Some(_) => None,
        };
        match (creds, reason) {
            (Some(c), None) => {
                self.limiter.record_success(name);
                // Sign-ins are audited too, so an admin can tell who came in when and from where.
                self.audit(Self::event(
                    Some(c.name.clone()),
                    "auth.login",
                    Some(c.name.clone()),
                    Outcome::Allowed,
                    ctx,
                    None,
                ))
                .await;
                self.issue_pair(c.id, c.name, c.role).await
            }
            (_, reason) => {
                self.limiter.record_failure(name, ctx.source);
                self.deny_login(name, ctx, reason.unwrap_or("wrong password"))
                    .await;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Audits a refused sign-in for the account `name`.
    async fn deny_login(&self, name: &str, ctx: &RequestContext, why: &str) {
        let event = Self::event(
            None,
            "auth.login",
            Some(name.to_string()),
            Outcome::Denied,
            ctx,
            Some(why.to_string()),
        );
        self.audit_denial(event, ctx).await;
    }

    async fn issue_pair(
        &self,
        user_id: i64,
        name: String,
        role: Role,
    ) -> Result<TokenPair, AuthError> {
        let access_token =
            self.key
                .issue(user_id, &name, role, self.config.access_token_ttl_seconds)?;
        let ttl = self.config.refresh_token_ttl_seconds;
        let refresh_token = self
            .store
            .run(move |c| tokens::create_refresh(c, user_id, ttl))
            .await?;
        Ok(TokenPair {
            access_token,
            token_type: "bearer",
            expires_in: self.config.access_token_ttl_seconds,
            refresh_token,
        })
    }

    /// Exchanges a refresh token for a new pair; the old refresh token stops working.
    pub async fn refresh(&self, token: &str, ctx: &RequestContext) -> Result<TokenPair, AuthError> {
        let token = token.to_string();
        let result = self
            .store
            .run(move |c| {
                let tx = c.unchecked_transaction()?;
                let user_id = tokens::consume_refresh(&tx, &token)?;
                let creds = users::credentials_by_id(&tx, user_id)?;
                tx.commit()?;
                Ok::<_, AuthError>(creds)
            })
            .await;
        match result {
            Ok(Some(c)) if !c.disabled => self.issue_pair(c.id, c.name, c.role).await,
            Ok(_) => {
                let err = AuthError::InvalidToken(
                    "the account of this refresh token is disabled or deleted",
                );
                self.deny_token(&err, "auth.refresh", ctx).await;
                Err(err)
            }
            Err(err) => {
                self.deny_token(&err, "auth.refresh", ctx).await;
                Err(err)
            }
        }
    }

    async fn deny_token(&self, err: &AuthError, action: &'static str, ctx: &RequestContext) {
        if matches!(
            err,
            AuthError::InvalidToken(_) | AuthError::MissingCredentials
        ) {
            self.audit_denial(
                Self::event(
                    None,
                    action,
                    Some(ctx.route.clone()),
                    Outcome::Denied,
                    ctx,
                    Some(err.to_string()),
                ),
                ctx,
            )
            .await;
        }
    }

    /// Revokes a refresh token (sign-out). Unknown or already revoked tokens are accepted
    /// silently, as RFC 7009 asks, so sign-out never fails for the user.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let token = token.to_string();
        self.store
            .run(move |c| match tokens::consume_refresh(c, &token) {
                Ok(_) | Err(AuthError::InvalidToken(_)) => Ok(()),
                Err(e) => Err(e),
            })
            .await
    }

    /// Resolves an `Authorization` header value to a principal, or denies (and audits) it.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<Principal, AuthError> {
        let result = self.resolve(authorization, &ctx.route).await;
        if let Err(e) = &result {
            self.deny_token(e, "auth.authenticate", ctx).await;
        }
        result
    }

    async fn resolve(
        &self,
        authorization: Option<&str>,
        route: &str,
    ) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::MissingCredentials)?;
        let (scheme, credential) = header.split_once(' ').ok_or(AuthError::InvalidToken(
            "the Authorization header must be `Bearer <token>`",
        ))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::InvalidToken(
                "only the Bearer scheme is accepted",
            ));
        }
        let credential = credential.trim().to_string();
        if credential.starts_with(LOCAL_TOKEN_PREFIX) {
            let digest: [u8; 32] = sha2::Sha256::digest(credential.as_bytes()).into();
            if self.local_token != Some(digest) {
                return Err(AuthError::InvalidToken(
                    "the local token is not this daemon's (it changes at every start)",
                ));
            }
            if !LOCAL_TOKEN_ROUTES.contains(&route) {
                return Err(AuthError::InvalidToken(
                    "the local token opens the backup routes only",
                ));
            }
            return Ok(Principal {
                user_id: 0,
                name: LOCAL_ADMIN.to_string(),
                role: Role::Admin,
                api_key_id: None,
            });
        }
        if credential.starts_with(KEY_PREFIX) {
            return self
                .store
                .run(move |c| {
                    let (key_id, user_id) = api_keys::resolve(c, &credential)?.ok_or(
                        AuthError::InvalidToken("the API key is not valid or has been revoked"),
                    )?;
                    let creds = users::credentials_by_id(c, user_id)?
                        .filter(|u| !u.disabled)
                        .ok_or(AuthError::InvalidToken(
                            "the API key's owner is disabled or deleted",
                        ))?;
                    Ok(Principal {
                        user_id,
                        name: creds.name,
                        role: creds.role,
                        api_key_id: Some(key_id),
                    })
                })
                .await;
        }
        let claims = self.key.verify(&credential)?;
        let user_id: i64 = claims
            .sub
            .parse()
            .map_err(|_| AuthError::InvalidToken("the access token is malformed"))?;
        let creds = self
            .store
            .run(move |c| users::credentials_by_id(c, user_id).map_err(AuthError::from))
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidToken(
                "the access token's user is disabled or deleted",
            ))?;
        if claims.iat_ms < creds.password_changed_at {
            return Err(AuthError::InvalidToken(
                "the password changed after this access token was issued; sign in again",
            ));
        }
        Ok(Principal {
            user_id,
            name: creds.name,
            role: creds.role,
            api_key_id: None,
        })
    }

    /// Denies (and audits) unless the caller is an admin.
    pub async fn require_admin(
        &self,
        p: &Principal,
        action: &'static str,
        target: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<(), AuthError> {
        if p.is_admin() {
            return Ok(());
        }
        self.audit(Self::event(
            Some(p.actor()),
            action,
            target.map(str::to_string),
            Outcome::Denied,
            ctx,
            Some(format!("role {} is not admin", p.role)),
        ))
        .await;
        Err(AuthError::Forbidden(format!(
            "{action} needs the admin role; you are {}",
            p.role
        )))
    }

    /// Runs an admin action: checks the role, runs `f` in the store, audits the outcome.
    async fn admin_action<T, F>(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        action: &'static str,
        target: Option<String>,
        f: F,
    ) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AuthError> + Send + 'static,
    {
        self.require_admin(p, action, target.as_deref(), ctx)
            .await?;
        self.audited(p, ctx, action, target, None, f).await
    }

    /// Runs `f` in the store and audits its outcome with `change` (what it does, if worth
    /// saying); the caller has checked permissions.
    async fn audited<T, F>(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        action: &'static str,
        target: Option<String>,
        change: Option<String>,
        f: F,
    ) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AuthError> + Send + 'static,
    {
        let result = self.store.run(f).await;
        let (outcome, detail) = match (&result, change) {
            (Ok(_), change) => (Outcome::Allowed, change),
            (Err(e), Some(change)) => (Outcome::Failed, Some(format!("{change}: {e}"))),
            (Err(e), None) => (Outcome::Failed, Some(e.to_string())),
        };
        self.audit(Self::event(
            Some(p.actor()),
            action,
            target,
            outcome,
            ctx,
            detail,
        ))
        .await;
        result
    }

    /// Audits an admin action carried out by another capability (e.g. loading a model), after
    /// [`Auth::require_admin`] allowed it.
    pub async fn record_admin_action(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        action: &'static str,
        target: &str,
        result: Result<(), String>,
    ) {
        let (outcome, detail) = match result {
            Ok(()) => (Outcome::Allowed, None),
            Err(e) => (Outcome::Failed, Some(e)),
        };
        self.audit(Self::event(
            Some(p.actor()),
            action,
            Some(target.to_string()),
            outcome,
            ctx,
            detail,
        ))
        .await;
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        self.check_password_policy(password)?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(AuthError::Internal)
    }

    /// Creates a user (admin).
    pub async fn create_user(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
        password: &str,
        role: Role,
    ) -> Result<User, AuthError> {
        // Checked before hashing, so that refused callers cannot make the daemon hash for them.
        self.require_admin(p, "user.create", Some(name), ctx)
            .await?;
        users::validate_name("user", name)?;
        let hash = self.hash(password).await?;
        let name = name.to_string();
        let created = self
            .audited(p, ctx, "user.create", Some(name.clone()), None, move |c| {
                users::insert(c, &name, role, &hash)
            })
            .await;
        if created.is_ok() {
            self.refresh_unlockers().await;
        }
        created
    }

    /// Lists users (admin).
    pub async fn list_users(
        &self,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<Vec<User>, AuthError> {
        self.require_admin(p, "user.list", None, ctx).await?;
        self.store
            .run(|c| users::list(c).map_err(AuthError::from))
            .await
    }

    /// One user (admin, or the user themself).
    pub async fn get_user(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<User, AuthError> {
        if !p.name.eq_ignore_ascii_case(name) {
            self.require_admin(p, "user.get", Some(name), ctx).await?;
        }
        let lookup = name.to_string();
        self.store
            .run(move |c| users::get(c, &lookup).map_err(AuthError::from))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))
    }

    /// Changes a user. Admins may change anything; users may change their own password when
    /// they give their current one.
    pub async fn update_user(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
        update: UserUpdate,
    ) -> Result<User, AuthError> {
        let is_self = p.name.eq_ignore_ascii_case(name);
        let admin_fields = update.role.is_some() || update.disabled.is_some();
        if !is_self || admin_fields {
            self.require_admin(p, "user.update", Some(name), ctx)
                .await?;
        }
        if is_self && !p.is_admin() {
            let current = update.current_password.clone().ok_or_else(|| {
                AuthError::Invalid("changing your own password needs current_password".into())
            })?;
            let lookup = p.name.clone();
            let stored = self
                .store
                .run(move |c| users::credentials_by_name(c, &lookup).map_err(AuthError::from))
                .await?
                .map(|c| c.password_hash)
                .unwrap_or_default();
            let ok = tokio::task::spawn_blocking(move || password::verify(&current, &stored))
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            if !ok {
                self.audit(Self::event(
                    Some(p.actor()),
                    "user.password",
                    Some(name.to_string()),
                    Outcome::Denied,
                    ctx,
                    Some("current_password is wrong".into()),
                ))
                .await;
                return Err(AuthError::Forbidden("current_password is wrong".into()));
            }
        }
        let new_hash = match &update.password {
            Some(pw) => Some(self.hash(pw).await?),
            None => None,
        };
        let target = name.to_string();
        let detail = describe_update(&update);
        let f = move |c: &mut Connection| -> Result<User, AuthError> {
            let tx = c.transaction()?;
            let creds = users::credentials_by_name(&tx, &target)?
                .ok_or_else(|| AuthError::NotFound(format!("no user named {target:?}")))?;
            let loses_admin = creds.role == Role::Admin
                && !creds.disabled
                && (update.role.is_some_and(|r| r != Role::Admin) || update.disabled == Some(true));
            if loses_admin && users::enabled_admins(&tx)? <= 1 {
                return Err(AuthError::Conflict(format!(
                    "{target:?} is the last enabled admin; make another admin first"
                )));
            }
            if let Some(role) = update.role {
                users::set_role(&tx, creds.id, role)?;
            }
            if let Some(disabled) = update.disabled {
                users::set_disabled(&tx, creds.id, disabled)?;
            }
            if let Some(hash) = &new_hash {
                users::set_password(&tx, creds.id, hash)?;
            }
            let user = users::get(&tx, &target)?
                .ok_or_else(|| AuthError::NotFound(format!("no user named {target:?}")))?;
            tx.commit()?;
            Ok(user)
        };
        let updated = self
            .audited(
                p,
                ctx,
                "user.update",
                Some(name.to_string()),
                Some(detail),
                f,
            )
            .await;
        if updated.is_ok() {
            self.refresh_unlockers().await;
        }
        updated
    }

    /// Deletes a user with their sessions and keys (admin; never the last admin).
    pub async fn delete_user(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<(), AuthError> {
        let target = name.to_string();
        self.admin_action(p, ctx, "user.delete", Some(name.to_string()), move |c| {
            let tx = c.transaction()?;
            let creds = users::credentials_by_name(&tx, &target)?
                .ok_or_else(|| AuthError::NotFound(format!("no user named {target:?}")))?;
            if creds.role == Role::Admin && !creds.disabled && users::enabled_admins(&tx)? <= 1 {
                return Err(AuthError::Conflict(format!(
                    "{target:?} is the last enabled admin; make another admin first"
                )));
            }
            users::delete(&tx, creds.id)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.refresh_unlockers().await;
        Ok(())
    }

    /// Lists groups (admin).
    pub async fn list_groups(
        &self,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<Vec<Group>, AuthError> {
        self.require_admin(p, "group.list", None, ctx).await?;
        self.store
            .run(|c| users::list_groups(c).map_err(AuthError::from))
            .await
    }

    /// Creates a group (admin).
    pub async fn create_group(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<Group, AuthError> {
        let n = name.to_string();
        self.admin_action(p, ctx, "group.create", Some(name.to_string()), move |c| {
            users::create_group(c, &n)
        })
        .await
    }

    /// Deletes a group (admin).
    pub async fn delete_group(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<(), AuthError> {
        let n = name.to_string();
        self.admin_action(p, ctx, "group.delete", Some(name.to_string()), move |c| {
            users::delete_group(c, &n)
        })
        .await
    }

    /// Adds or removes a group member (admin).
    pub async fn set_membership(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        group: &str,
        user: &str,
        member: bool,
    ) -> Result<(), AuthError> {
        let (g, u) = (group.to_string(), user.to_string());
        let action = if member {
            "group.add_member"
        } else {
            "group.remove_member"
        };
        self.admin_action(p, ctx, action, Some(format!("{group}/{user}")), move |c| {
            if member {
                users::add_member(c, &g, &u)
            } else {
                users::remove_member(c, &g, &u)
            }
        })
        .await
    }

    /// Creates an API key for the caller, or (admin) for another user. Returns the secret once.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
        owner: Option<&str>,
    ) -> Result<(ApiKey, String), AuthError> {
        let owner = owner.unwrap_or(&p.name).to_string();
        let for_other = !owner.eq_ignore_ascii_case(&p.name);
        if for_other {
            self.require_admin(p, "key.create", Some(&owner), ctx)
                .await?;
        }
        let key_name = name.to_string();
        let lookup = owner.clone();
        let result = self
            .store
            .run(move |c| {
                let creds = users::credentials_by_name(c, &lookup)?
                    .ok_or_else(|| AuthError::NotFound(format!("no user named {lookup:?}")))?;
                api_keys::create(c, creds.id, &key_name)
            })
            .await;
        let (outcome, detail) = match &result {
            Ok((k, _)) => (Outcome::Allowed, format!("key {} ({})", k.id, k.prefix)),
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        self.audit(Self::event(
            Some(p.actor()),
            "key.create",
            Some(owner),
            outcome,
            ctx,
            Some(detail),
        ))
        .await;
        result
    }

    /// Lists the caller's keys, or everyone's for an admin asking for all.
    pub async fn list_api_keys(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        all: bool,
    ) -> Result<Vec<ApiKey>, AuthError> {
        if all {
            self.require_admin(p, "key.list_all", None, ctx).await?;
        }
        let user = (!all).then_some(p.user_id);
        self.store
            .run(move |c| api_keys::list(c, user).map_err(AuthError::from))
            .await
    }

    /// Revokes a key (its owner or an admin). Others get "not found", so key ids do not leak.
    pub async fn revoke_api_key(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        id: i64,
    ) -> Result<ApiKey, AuthError> {
        let caller = p.user_id;
        let admin = p.is_admin();
        let result = self
            .store
            .run(move |c| {
                match api_keys::owned(c, id)? {
                    Some((_, owner)) if owner == caller || admin => {}
                    _ => return Err(AuthError::NotFound(format!("no API key {id}"))),
                }
                api_keys::revoke(c, id)?;
                api_keys::get(c, id)?.ok_or_else(|| AuthError::NotFound(format!("no API key {id}")))
            })
            .await;
        let (outcome, detail) = match &result {
            Ok(_) => (Outcome::Allowed, None),
            Err(AuthError::NotFound(_)) => (Outcome::Denied, Some("not found or not yours".into())),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        self.audit(Self::event(
            Some(p.actor()),
            "key.revoke",
            Some(id.to_string()),
            outcome,
            ctx,
            detail,
        ))
        .await;
        result
    }

    /// Reads the audit log (admin).
    pub async fn list_audit(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, AuthError> {
        self.require_admin(p, "audit.list", None, ctx).await?;
        self.store
            .run(move |c| audit::list(c, &query).map_err(AuthError::from))
            .await
    }
}

/// Checks a new password: long enough, not blank, not absurdly long.
pub fn check_password_policy(password: &str, min_len: usize) -> Result<(), AuthError> {
    let len = password.chars().count();
    if len < min_len {
        return Err(AuthError::Invalid(format!(
            "the password is {len} characters long; it must have at least {min_len}"
        )));
    }
    if len > 1024 {
        return Err(AuthError::Invalid(
            "the password is longer than 1024 characters".into(),
        ));
    }
    if password.trim().is_empty() {
        return Err(AuthError::Invalid(
            "the password must not be only spaces".into(),
        ));
    }
    Ok(())
}

fn describe_update(u: &UserUpdate) -> String {
    let mut parts = Vec::new();
    if let Some(r) = u.role {
        parts.push(format!("role={r}"));
    }
    if let Some(d) = u.disabled {
        parts.push(format!("disabled={d}"));
    }
    if u.password.is_some() {
        parts.push("password changed".to_string());
    }
    if parts.is_empty() {
        "no change".to_string()
    } else {
        parts.join(", ")
    }
}
