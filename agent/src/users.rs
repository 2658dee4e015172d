//! User and group ids to names, through the system's NSS (so LDAP/sssd users resolve too),
//! cached. A miss is cached as well: a uid without a name is reported by id only.

use std::{collections::HashMap, sync::Arc};

use nix::unistd::{Uid, User};

pub struct UserNames {
    /// Shared, so each line that names a user takes a reference, not a copy.
    cache: HashMap<u32, Option<Arc<str>>>,
    max_entries: usize,
}

impl UserNames {
    pub fn new(max_entries: usize) -> Self {
        Self {
            cache: HashMap::new(),
            max_entries,
        }
    }

    pub fn name(&mut self, uid: u32) -> Option<&Arc<str>> {
        if !self.cache.contains_key(&uid) {
            if self.cache.len() >= self.max_entries {
                self.cache.clear();
            }
            let name = User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|user| Arc::from(user.name));
            self.cache.insert(uid, name);
        }
        self.cache.get(&uid).and_then(Option::as_ref)
    }

    /// Forget everything (names can change; called now and then).
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_root() {
        let mut names = UserNames::new(4);
        assert_eq!(names.name(0).map(|n| &**n), Some("root"));
        assert_eq!(names.name(0xfff0_0001), None);
    }
}
