//! The spec's roles and what each may do (HIP-0082, "RBAC Roles"), as one table.
//! Every route names the permission it needs when it is added to the router
//! (see [`crate::guard`]); this module alone decides who holds it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "twin-admin")]
    TwinAdmin,
    #[serde(rename = "twin-operator")]
    TwinOperator,
    #[serde(rename = "twin-viewer")]
    TwinViewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::TwinAdmin, Role::TwinOperator, Role::TwinViewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::TwinAdmin => "twin-admin",
            Role::TwinOperator => "twin-operator",
            Role::TwinViewer => "twin-viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Twins,
    Scenes,
    Jobs,
    Synthdata,
    Infra,
    /// The audit log. Not in the spec's table; only admins read it.
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Start,
    Stop,
    Upload,
    Submit,
    Cancel,
    Generate,
    InjectChaos,
    Replay,
}

/// One action on one kind of resource: what a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub resource: Resource,
    pub action: Action,
}

impl Permission {
    pub const fn new(resource: Resource, action: Action) -> Permission {
        Permission { resource, action }
    }

    /// Reads change nothing; everything else is recorded in the audit log.
    pub fn is_read(self) -> bool {
        self.action == Action::Read
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = serde_json::to_value(self.resource).unwrap_or_default();
        let action = serde_json::to_value(self.action).unwrap_or_default();
        write!(
            f,
            "{}:{}",
            resource.as_str().unwrap_or("?"),
            action.as_str().unwrap_or("?")
        )
    }
}

/// What a role's permission covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    Denied,
    /// Only resources the caller created (operators cancelling jobs).
    OwnOnly,
    Any,
}

use Action::*;
use Grant::{Any, OwnOnly};
use Resource::*;

type Row = (Resource, &'static [(Action, Grant)]);

/// The spec's table, row for row.
const TABLE: &[(Role, &[Row])] = &[
    (
        Role::TwinAdmin,
        &[
            (
                Twins,
                &[
                    (Create, Any),
                    (Read, Any),
                    (Update, Any),
                    (Delete, Any),
                    (Start, Any),
                    (Stop, Any),
                ],
            ),
            (Scenes, &[(Upload, Any), (Read, Any), (Delete, Any)]),
            (Jobs, &[(Submit, Any), (Cancel, Any), (Read, Any)]),
            (Synthdata, &[(Generate, Any), (Read, Any), (Delete, Any)]),
            (Infra, &[(InjectChaos, Any), (Replay, Any), (Read, Any)]),
            (Audit, &[(Read, Any)]),
        ],
    ),
    (
        Role::TwinOperator,
        &[
            (Twins, &[(Read, Any), (Start, Any), (Stop, Any)]),
            (Scenes, &[(Read, Any)]),
            (Jobs, &[(Submit, Any), (Cancel, OwnOnly), (Read, Any)]),
            (Synthdata, &[(Generate, Any), (Read, Any)]),
            (Infra, &[(Replay, Any), (Read, Any)]),
        ],
    ),
    (
        Role::TwinViewer,
        &[
            (Twins, &[(Read, Any)]),
            (Scenes, &[(Read, Any)]),
            (Jobs, &[(Read, Any)]),
            (Synthdata, &[(Read, Any)]),
            (Infra, &[(Read, Any)]),
        ],
    ),
];

/// What one role may do with `permission`.
pub fn role_grant(role: Role, permission: Permission) -> Grant {
    TABLE
        .iter()
        .filter(|(r, _)| *r == role)
        .flat_map(|(_, rows)| rows.iter())
        .filter(|(resource, _)| *resource == permission.resource)
        .flat_map(|(_, actions)| actions.iter())
        .find(|(action, _)| *action == permission.action)
        .map_or(Grant::Denied, |(_, grant)| *grant)
}

/// The widest grant any of `roles` gives.
pub fn grant(roles: &[Role], permission: Permission) -> Grant {
    roles
        .iter()
        .map(|r| role_grant(*r, permission))
        .max()
        .unwrap_or(Grant::Denied)
}

/// The roles that hold `permission` (for error messages).
pub fn roles_with(permission: Permission) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| role_grant(*r, permission) != Grant::Denied)
        .collect()
}

/// Every permission some role holds, in the table's order (the admin's
/// rows hold them all).
pub fn permissions() -> Vec<Permission> {
    let mut all = Vec::new();
    for (_, rows) in TABLE {
        for (resource, actions) in rows.iter() {
            for (action, _) in actions.iter() {
                let p = Permission::new(*resource, *action);
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(resource: Resource, action: Action) -> Permission {
        Permission::new(resource, action)
    }

    #[test]
    fn table_matches_the_spec() {
        use Role::*;
        assert_eq!(role_grant(TwinAdmin, p(Twins, Delete)), Any);
        assert_eq!(role_grant(TwinOperator, p(Twins, Delete)), Grant::Denied);
        assert_eq!(role_grant(TwinOperator, p(Twins, Start)), Any);
        assert_eq!(role_grant(TwinOperator, p(Twins, Create)), Grant::Denied);
        assert_eq!(role_grant(TwinOperator, p(Jobs, Cancel)), OwnOnly);
        assert_eq!(role_grant(TwinAdmin, p(Jobs, Cancel)), Any);
        assert_eq!(
            role_grant(TwinOperator, p(Synthdata, Delete)),
            Grant::Denied
        );
        assert_eq!(
            role_grant(TwinOperator, p(Infra, InjectChaos)),
            Grant::Denied
        );
        assert_eq!(role_grant(TwinOperator, p(Infra, Replay)), Any);
        assert_eq!(role_grant(TwinViewer, p(Infra, Replay)), Grant::Denied);
        assert_eq!(role_grant(TwinViewer, p(Scenes, Upload)), Grant::Denied);
        for resource in [Twins, Scenes, Jobs, Synthdata, Infra] {
            for role in Role::ALL {
                assert_eq!(
                    role_grant(role, p(resource, Read)),
                    Any,
                    "{role} {resource:?}"
                );
            }
        }
        assert_eq!(roles_with(p(Audit, Read)), vec![TwinAdmin]);
    }

    #[test]
    fn several_roles_give_the_widest_grant() {
        let roles = [Role::TwinViewer, Role::TwinOperator];
        assert_eq!(grant(&roles, p(Jobs, Cancel)), OwnOnly);
        assert_eq!(grant(&[], p(Twins, Read)), Grant::Denied);
        let roles = [Role::TwinOperator, Role::TwinAdmin];
        assert_eq!(grant(&roles, p(Jobs, Cancel)), Any);
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(p(Infra, InjectChaos).to_string(), "infra:inject_chaos");
    }
}
