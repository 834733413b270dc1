//! Identity: who the caller is (roles, the permission table, the principal of a session),
//! staff accounts, passwords, sessions and socket tickets, and the revocation that closes
//! sockets on every node. HTTP extractors (`crate::auth`), the CLI and the sockets all go
//! through [`Identity`]; it returns [`IdentityError`], never an HTTP type.

pub mod password;
pub mod sessions;
pub mod sockets;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use coherency_protocol::ids::{PatientId, ScanId, SessionId, UserId};
use coherency_protocol::{Code, ErrorCode};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;

use crate::clock::Clock;
use crate::error::{DomainError, StorageError};
use crate::store::redis::Redis;
use password::Hasher;
use sockets::SocketRegistry;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Clinician,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Patient, Role::Clinician, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(Role::Patient),
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Clinicians and admins must enrol TOTP, and verify it in the session, before any route
    /// but the enrolment ones.
    pub fn requires_mfa(self) -> bool {
        !matches!(self, Role::Patient)
    }
}

macro_rules! permissions {
    ($( $name:ident = $text:literal, phi = $phi:literal, roles = [$($role:ident),*]; )*) => {
        /// Everything a route can require. The role table below is the whole policy;
        /// object-level rules (whose record) are checked by the resource on top.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission { $($name),* }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$name),*];

            /// The scope string used in the OpenAPI document.
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$name => $text),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Permission::$name),)* _ => None }
            }

            /// Whether the route exposes protected health information.
            pub fn is_phi(self) -> bool {
                match self { $(Permission::$name => $phi),* }
            }

            /// The roles granted this permission.
            pub fn roles(self) -> &'static [Role] {
                match self { $(Permission::$name => &[$(Role::$role),*]),* }
            }
        }

        /// Zero-sized markers naming a permission in a handler's signature.
        pub mod perm {
            $(
                #[doc = concat!("Requires `", $text, "`.")]
                pub struct $name;
                impl super::Perm for $name {
                    const P: super::Permission = super::Permission::$name;
                }
            )*
        }
    };
}

permissions! {
    SelfService = "self", phi = false, roles = [Patient, Clinician, Admin];
    PatientsRead = "patients:read", phi = true, roles = [Patient, Clinician, Admin];
    PatientsWrite = "patients:write", phi = true, roles = [Patient, Clinician, Admin];
    PatientsCreate = "patients:create", phi = true, roles = [Clinician, Admin];
    PatientsSearch = "patients:search", phi = true, roles = [Clinician, Admin];
    PatientsDeactivate = "patients:deactivate", phi = true, roles = [Admin];
    EmergencyAccess = "emergency-access", phi = true, roles = [Clinician];
    UsersManage = "users:manage", phi = false, roles = [Admin];
    AuditRead = "audit:read", phi = true, roles = [Admin];
    ScansCreate = "scans:create", phi = true, roles = [Patient, Clinician, Admin];
    ScansRead = "scans:read", phi = true, roles = [Patient, Clinician, Admin];
    ScansMeasure = "scans:measure", phi = true, roles = [Clinician, Admin];
    WoundsWrite = "wounds:write", phi = true, roles = [Clinician, Admin];
    ScheduleManage = "schedule:manage", phi = false, roles = [Clinician, Admin];
    BookingsRead = "bookings:read", phi = true, roles = [Patient, Clinician, Admin];
    BookingsWrite = "bookings:write", phi = true, roles = [Patient, Clinician, Admin];
    ConsultsJoin = "consults:join", phi = true, roles = [Patient, Clinician, Admin];
    ConsultsHost = "consults:host", phi = true, roles = [Clinician, Admin];
    DashboardView = "dashboard:view", phi = true, roles = [Patient, Clinician, Admin];
}

/// Implemented by the markers in [`perm`].
pub trait Perm {
    const P: Permission;
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
    pub session_id: SessionId,
    pub mfa_enrolled: bool,
    pub mfa_verified: bool,
    /// The caller's own patient record, for patients.
    pub patient_id: Option<PatientId>,
    /// Set for a capture session (a redeemed capture link, `crate::services::capture`): the one scan
    /// it may stream. Such a session reaches that scan's stream, RTC signalling and socket
    /// tickets and nothing else (`crate::auth::confine`).
    pub capture_scan: Option<ScanId>,
}

impl Principal {
    pub fn has(&self, p: Permission) -> bool {
        p.roles().contains(&self.role)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// A new random token with a readable prefix (`cha_` access, `chr_` refresh, `cht_` ticket,
/// `chc_` capture code): 256 random bits, unpadded base64url.
pub fn new_token(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{prefix}{}", B64URL.encode(raw))
}

/// The keyed hash stored in place of a token.
pub fn token_hash(secret: &[u8], token: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why identity refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No, a malformed or an unknown credential.
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    TokenRevoked(&'static str),
    #[error("{0}")]
    TokenExpired(&'static str),
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("{why}")]
    WeakPassword { field: String, why: String },
    #[error("patients register themselves; use clinician or admin")]
    NotStaff,
    /// A fault of ours; the cause is logged, the client told "internal error".
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IdentityError {
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl From<redis::RedisError> for IdentityError {
    fn from(e: redis::RedisError) -> Self {
        Self::Storage(e.into())
    }
}

impl From<crate::audit::AppendError> for IdentityError {
    fn from(e: crate::audit::AppendError) -> Self {
        Self::Storage(e.into())
    }
}

impl ErrorCode for IdentityError {
    fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::TokenRevoked(_) => Code::TokenRevoked,
            Self::TokenExpired(_) => Code::TokenExpired,
            Self::AccountDisabled => Code::AccountDisabled,
            Self::EmailTaken => Code::EmailTaken,
            Self::WeakPassword { .. } => Code::WeakPassword,
            Self::NotStaff => Code::InvalidField,
            Self::Internal(_) => Code::Internal,
            Self::Storage(e) => e.code(),
        }
    }
}

impl DomainError for IdentityError {
    fn field(&self) -> Option<&str> {
        match self {
            Self::EmailTaken => Some("email"),
            Self::WeakPassword { field, .. } => Some(field),
            Self::NotStaff => Some("role"),
            _ => None,
        }
    }
}

/// A staff account to create, from the API or the CLI's `create-admin`. The email (already
/// lowercased) and the display name are parsed at the boundary; the role and the password's
/// strength are checked here, so both callers hold them to the same rules.
pub struct NewStaff {
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub role: Role,
}

/// The identity service: what it needs and nothing else.
pub struct Identity {
    pg: PgPool,
    redis: Redis,
    clock: Clock,
    /// Keys token hashes and tickets; shared by every node.
    token_secret: SecretString,
    hasher: Hasher,
    sockets: Arc<SocketRegistry>,
}

impl Identity {
    pub fn new(
        pg: PgPool,
        redis: Redis,
        clock: Clock,
        token_secret: SecretString,
        hasher: Hasher,
        sockets: Arc<SocketRegistry>,
    ) -> Self {
        Self { pg, redis, clock, token_secret, hasher, sockets }
    }

    /// The password hasher (its permits bound concurrent argon2 work on this node).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The sockets open on this node, for revocation.
    pub fn sockets(&self) -> &Arc<SocketRegistry> {
        &self.sockets
    }

    /// The keyed hash of a token or recovery code, as stored.
    pub fn token_hash(&self, token: &str) -> String {
        token_hash(self.token_secret.expose_secret().as_bytes(), token)
    }

    /// Listens for revocations announced by other nodes, for as long as the node runs.
    pub async fn listen_for_revocations(self: Arc<Self>) {
        sockets::listen(self.sockets.clone(), self.redis.clone()).await
    }

    /// Inserts a user in `tx`; `email_taken` on a duplicate.
    pub async fn insert_user(
        &self,
        tx: &mut sqlx::PgConnection,
        email: &str,
        display_name: &str,
        role: Role,
        password_hash: &str,
    ) -> Result<UserId, IdentityError> {
        let id = UserId::new();
        let res = sqlx::query!(
            "INSERT INTO users (id, email, display_name, role, password_hash, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$6)
             ON CONFLICT (email) DO NOTHING",
            id.as_uuid(),
            email,
            display_name,
            role.as_str(),
            password_hash,
            self.clock.now(),
        )
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(IdentityError::EmailTaken);
        }
        Ok(id)
    }

    /// Creates a staff account (clinician or admin).
    pub async fn create_staff(&self, staff: NewStaff) -> Result<UserId, IdentityError> {
        if staff.role == Role::Patient {
            return Err(IdentityError::NotStaff);
        }
        password::validate(&staff.password, "password")?;
        let hash = self.hasher.hash(staff.password).await?;
        let mut tx = self.pg.begin().await?;
        let id = self.insert_user(&mut tx, &staff.email, &staff.display_name, staff.role, &hash).await?;
        tx.commit().await?;
        Ok(id)
    }
}
