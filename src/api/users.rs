//! `/api/v1/users` and `/api/v1/groups`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, Caller};
use crate::auth::{Group, Role, User, UserUpdate};
use crate::daemon::App;
use crate::error::Problem;

/// Body of `POST /api/v1/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    password: String,
    role: Role,
}

/// Body of `PATCH /api/v1/users/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    role: Option<Role>,
    password: Option<String>,
    current_password: Option<String>,
    disabled: Option<bool>,
}

/// Body of `POST /api/v1/groups`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

/// `GET /api/v1/users` (admin).
pub async fn list(State(app): State<Arc<App>>, c: Caller) -> Result<Json<Vec<User>>, Problem> {
    Ok(Json(app.auth.list_users(&c.principal, &c.ctx).await?))
}

/// `POST /api/v1/users` (admin): 201 with the user.
pub async fn create(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<Response, Problem> {
    let user = app
        .auth
        .create_user(&c.principal, &c.ctx, &req.name, &req.password, req.role)
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// `GET /api/v1/users/{name}` (admin or self).
pub async fn get(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<User>, Problem> {
    Ok(Json(app.auth.get_user(&c.principal, &c.ctx, &name).await?))
}

/// `PATCH /api/v1/users/{name}`: role and disabled (admin), password (admin or self).
pub async fn update(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PatchUser>,
) -> Result<Json<User>, Problem> {
    let update = UserUpdate {
        role: req.role,
        password: req.password,
        current_password: req.current_password,
        disabled: req.disabled,
    };
    Ok(Json(
        app.auth
            .update_user(&c.principal, &c.ctx, &name, update)
            .await?,
    ))
}

/// `DELETE /api/v1/users/{name}` (admin): 204.
pub async fn delete(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    app.auth.delete_user(&c.principal, &c.ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/groups` (admin).
pub async fn list_groups(
    State(app): State<Arc<App>>,
    c: Caller,
) -> Result<Json<Vec<Group>>, Problem> {
    Ok(Json(app.auth.list_groups(&c.principal, &c.ctx).await?))
}

/// `POST /api/v1/groups` (admin): 201.
pub async fn create_group(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<NewGroup>,
) -> Result<Response, Problem> {
    let group = app
        .auth
        .create_group(&c.principal, &c.ctx, &req.name)
        .await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

/// `DELETE /api/v1/groups/{name}` (admin): 204.
pub async fn delete_group(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    app.auth.delete_group(&c.principal, &c.ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/groups/{name}/members/{user}` (admin): 204.
pub async fn add_member(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath((group, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    app.auth
        .set_membership(&c.principal, &c.ctx, &group, &user, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/groups/{name}/members/{user}` (admin): 204.
pub async fn remove_member(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath((group, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    app.auth
        .set_membership(&c.principal, &c.ctx, &group, &user, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
