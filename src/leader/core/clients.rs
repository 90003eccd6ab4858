//! Adding clients on the core thread: one (`add-client`) placed without planning the whole
//! fleet, or many (`add-clients`) checked all at once, persisted in one transaction and placed
//! by one plan.

use std::collections::HashMap;

use tracing::info;

use super::{Assigned, Core, CoreError};
use crate::leader::audit::AuditEntry;
use crate::leader::liveness::Millis;
use crate::leader::reason::{AssignmentReason, AuditKind};
use crate::leader::registry::{ClientSpec, Registry, RegistryError};

/// What `add-clients` did: every client with where it went, or (nothing added) every problem
/// with the index of the client it is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddedClients {
    pub(crate) added: Vec<(String, Assigned)>,
    pub(crate) problems: Vec<(usize, String)>,
}

impl Core {
    pub(super) fn add_client(
        &mut self,
        spec: ClientSpec,
        now: Millis,
    ) -> Result<Assigned, CoreError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(CoreError::Invalid(problems));
        }
        let name = spec.name.clone();
        let added = added_entry(&spec, "sqdctl add-client");
        let fx = self.registry.add_client(spec, now)?;
        self.carry_out_with(fx, vec![added])?;
        let assigned = assigned(&self.registry, &name)?;
        info!(client = %name, worker = assigned.worker.as_deref().unwrap_or("-"), epoch = assigned.epoch, "client added");
        Ok(assigned)
    }

    pub(super) fn add_clients(
        &mut self,
        specs: Vec<ClientSpec>,
        dry_run: bool,
        now: Millis,
    ) -> Result<AddedClients, CoreError> {
        let problems = batch_problems(&specs, |name| self.registry.client(name).is_some());
        if !problems.is_empty() || dry_run {
            return Ok(AddedClients {
                added: Vec::new(),
                problems,
            });
        }
        let audit: Vec<AuditEntry> = specs
            .iter()
            .map(|s| added_entry(s, "sqdctl add-clients"))
            .collect();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let fx = self.registry.add_clients(specs, now)?;
        self.carry_out_with(fx, audit)?;
        let added = names
            .into_iter()
            .map(|name| assigned(&self.registry, &name).map(|a| (name, a)))
            .collect::<Result<Vec<_>, _>>()?;
        info!(clients = added.len(), "clients added in one transaction");
        Ok(AddedClients {
            added,
            problems: Vec::new(),
        })
    }
}

fn assigned(registry: &Registry, name: &str) -> Result<Assigned, RegistryError> {
    let client = registry
        .client(name)
        .ok_or_else(|| RegistryError::UnknownClient(name.to_owned()))?;
    Ok(Assigned {
        worker: client.worker.clone(),
        epoch: client.epoch,
    })
}

fn added_entry(spec: &ClientSpec, by: &str) -> AuditEntry {
    AuditEntry::now(
        &spec.name,
        AuditKind::Added,
        (None, None),
        0,
        AssignmentReason::Admin,
        format!("added by {by} (ssh {}, path {})", spec.ssh, spec.path),
    )
}

/// Every problem of a batch, by index: each spec's own, a name the registry already has
/// (`exists`), a name twice in the batch (named at its second place, pointing at the first).
fn batch_problems(specs: &[ClientSpec], exists: impl Fn(&str) -> bool) -> Vec<(usize, String)> {
    let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
    let mut problems = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        problems.extend(spec.problems().into_iter().map(|p| (i, p)));
        if exists(&spec.name) {
            problems.push((i, format!("client {:?} already exists", spec.name)));
        }
        if let Some(first) = first_at.insert(&spec.name, i) {
            first_at.insert(&spec.name, first);
            problems.push((
                i,
                format!("client {:?} is also entry {}", spec.name, first + 1),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_problems_name_every_entry_at_once() {
        let mut bad = ClientSpec::example("b");
        bad.ssh = "-oProxyCommand=x".into();
        let specs = vec![
            ClientSpec::example("a"),
            bad,
            ClientSpec::example("taken"),
            ClientSpec::example("a"),
        ];
        let problems = batch_problems(&specs, |n| n == "taken");
        let at: Vec<usize> = problems.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, vec![1, 2, 3], "{problems:?}");
        assert!(problems[1].1.contains("already exists"));
        assert!(problems[2].1.contains("also entry 1"));
    }

    #[test]
    fn a_clean_batch_has_no_problems() {
        let specs: Vec<ClientSpec> = (0..100)
            .map(|i| ClientSpec::example(&format!("c{i}")))
            .collect();
        assert!(batch_problems(&specs, |_| false).is_empty());
    }
}
