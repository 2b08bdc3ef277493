//! The twin records a host holds, indexed two ways: by id, in id order (ids
//! sort by creation time), so a list page is a range read; and by name, so a
//! request naming a twin resolves without scanning every record. With
//! 100,000 twins on a node both matter on every request.

use crate::error::TwinError;
use crate::protocol::{Scope, TwinFilter, TwinRef};
use crate::record::{TwinId, TwinRecord};
use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
pub struct Registry {
    records: BTreeMap<TwinId, TwinRecord>,
    /// Ids by twin name. A name is unique within an organization, so each
    /// list holds one id per organization using the name.
    by_name: HashMap<String, Vec<TwinId>>,
}

impl Registry {
    pub fn get(&self, id: TwinId) -> Option<&TwinRecord> {
        self.records.get(&id)
    }

    pub fn contains(&self, id: TwinId) -> bool {
        self.records.contains_key(&id)
    }

    /// Every record, in id order.
    pub fn records(&self) -> impl Iterator<Item = &TwinRecord> {
        self.records.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = TwinId> + '_ {
        self.records.keys().copied()
    }

    /// Adds `record`, or replaces the one with its id (renamed or not).
    pub fn insert(&mut self, record: TwinRecord) {
        let id = record.id;
        let name = record.definition.name.as_str().to_string();
        if let Some(old) = self.records.insert(id, record) {
            if old.definition.name.as_str() == name {
                return;
            }
            self.unindex(old.definition.name.as_str(), id);
        }
        self.by_name.entry(name).or_default().push(id);
    }

    pub fn remove(&mut self, id: TwinId) -> Option<TwinRecord> {
        let old = self.records.remove(&id)?;
        self.unindex(old.definition.name.as_str(), id);
        Some(old)
    }

    /// Drops every record.
    pub fn clear(&mut self) {
        self.records.clear();
        self.by_name.clear();
    }

    fn unindex(&mut self, name: &str, id: TwinId) {
        if let Some(ids) = self.by_name.get_mut(name) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Finds a twin by id or name among those `twin.scope` admits; others
    /// answer exactly as a twin that does not exist.
    pub fn resolve(&self, twin: &TwinRef) -> Result<TwinId, TwinError> {
        let key = twin.key.as_str();
        if let Some(id) = TwinId::parse(key)
            && let Some(r) = self.records.get(&id)
        {
            return if twin.scope.admits(r) {
                Ok(id)
            } else {
                Err(TwinError::NotFound(key.to_string()))
            };
        }
        let mut matches = self
            .by_name
            .get(key)
            .into_iter()
            .flatten()
            .filter(|id| self.records.get(id).is_some_and(|r| twin.scope.admits(r)));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(*id),
            (None, _) => Err(TwinError::NotFound(key.to_string())),
            (Some(_), Some(_)) => Err(TwinError::Conflict(format!(
                "name `{twin}` matches twins in several organizations; use the twin's id"
            ))),
        }
    }

    /// Whether a twin other than `except` has this name in `org`.
    pub fn name_taken(&self, org: &str, name: &str, except: Option<TwinId>) -> bool {
        self.by_name.get(name).is_some_and(|ids| {
            ids.iter().any(|id| {
                Some(*id) != except
                    && self
                        .records
                        .get(id)
                        .is_some_and(|r| r.definition.organization() == org)
            })
        })
    }

    /// The page of records `filter` asks for among those `scope` admits:
    /// from just past `filter.after`, in id order, at most `filter.limit`.
    pub fn page(&self, filter: &TwinFilter, scope: &Scope) -> Vec<TwinRecord> {
        use std::ops::Bound;
        let from = filter.after.map_or(Bound::Unbounded, Bound::Excluded);
        self.records
            .range((from, Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| scope.admits(r) && filter.matches(r))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Name, TwinDefinition};
    use crate::protocol::Scope;

    fn record(org: &str, name: &str) -> TwinRecord {
        let text = format!(
            "name: {name}\norganization: {org}\nscene:\n  uri: s.usda\nengine:\n  type: rapier3d\n"
        );
        let definition =
            TwinDefinition::parse(&text, crate::definition::Format::Yaml).expect("definition");
        TwinRecord::new(definition)
    }

    fn by(key: &str, scope: Scope) -> TwinRef {
        TwinRef {
            key: key.to_string(),
            scope,
        }
    }

    fn org(name: &str) -> Scope {
        Scope::Organization(Name::new(name).expect("name"))
    }

    #[test]
    fn a_name_resolves_within_its_scope_and_is_ambiguous_across_organizations() {
        let mut registry = Registry::default();
        let (a, b) = (record("acme", "arm"), record("globex", "arm"));
        let (ida, idb) = (a.id, b.id);
        registry.insert(a);
        registry.insert(b);
        assert_eq!(registry.resolve(&by("arm", org("acme"))).ok(), Some(ida));
        assert_eq!(registry.resolve(&by("arm", org("globex"))).ok(), Some(idb));
        assert!(matches!(
            registry.resolve(&by("arm", Scope::Node)),
            Err(TwinError::Conflict(_))
        ));
        assert!(matches!(
            registry.resolve(&by(&idb.to_string(), org("acme"))),
            Err(TwinError::NotFound(_))
        ));
        assert!(registry.name_taken("acme", "arm", None));
        assert!(!registry.name_taken("acme", "arm", Some(ida)));
        assert!(!registry.name_taken("initech", "arm", None));
    }

    #[test]
    fn a_renamed_or_removed_twin_leaves_the_name_index() {
        let mut registry = Registry::default();
        let mut twin = record("acme", "arm");
        let id = twin.id;
        registry.insert(twin.clone());
        twin.definition.name = Name::new("gripper").expect("name");
        registry.insert(twin);
        assert!(registry.resolve(&by("arm", Scope::Node)).is_err());
        assert_eq!(registry.resolve(&by("gripper", Scope::Node)).ok(), Some(id));
        assert!(registry.remove(id).is_some());
        assert!(registry.resolve(&by("gripper", Scope::Node)).is_err());
        assert!(!registry.name_taken("acme", "gripper", None));
        assert_eq!(registry.records().count(), 0);
    }

    #[test]
    fn pages_follow_id_order_from_the_cursor() {
        let mut registry = Registry::default();
        let mut ids = Vec::new();
        for i in 0..25 {
            let r = record(if i % 2 == 0 { "acme" } else { "globex" }, &format!("t{i}"));
            ids.push(r.id);
            registry.insert(r);
        }
        ids.sort();
        let mut filter = TwinFilter {
            limit: Some(10),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = registry.page(&filter, &Scope::Node);
            seen.extend(page.iter().map(|r| r.id));
            if page.len() < 10 {
                break;
            }
            filter.after = page.last().map(|r| r.id);
        }
        assert_eq!(seen, ids);
        let acme = registry.page(&TwinFilter::default(), &org("acme"));
        assert_eq!(acme.len(), 13);
        assert!(acme.iter().all(|r| r.definition.organization() == "acme"));
    }
}
