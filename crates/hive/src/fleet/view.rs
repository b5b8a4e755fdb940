//! The fleet as this hive sees it: each hive's card (what it publishes on etcd),
//! the peers' cards as the watch last gave them, the link to etcd, and the one rule
//! that picks the peers a request may go to. Pure: no IO, no hive state.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// Set on a request one hive sends another: its value is the sender's id. A request
/// that carries it is never sent on again.
pub const HOP_HEADER: &str = "x-rbee-hop";
/// The fleet's token, on a request between hives.
pub const TOKEN_HEADER: &str = "x-rbee-fleet-token";
/// On an answer a peer gave: that peer's id.
pub const HIVE_HEADER: &str = "x-rbee-hive";
/// The most a card read from etcd may be; a larger one is ignored.
pub const MAX_CARD_BYTES: usize = 1 << 20;
/// The most peers one view holds; past it, new ones are ignored.
pub const MAX_PEERS: usize = 1024;

/// What a hive publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// Its id, stable across restarts.
    pub id: String,
    /// Where the other hives reach it.
    pub url: String,
    /// Its version.
    pub version: String,
    /// Its devices.
    pub devices: Vec<DeviceCard>,
    /// Its models (available ones).
    pub models: Vec<ModelCard>,
    /// The models it has loaded now.
    pub loaded: Vec<LoadedCard>,
}

/// A device of a hive and the room the hive's workers have left on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCard {
    /// `RAM`, `GPU 0`, ...
    pub name: String,
    /// What the hive's workers may hold on it.
    pub budget_bytes: u64,
    /// What is left of that budget now.
    pub free_bytes: u64,
}

/// A model in a hive's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The catalog id.
    pub id: String,
    /// Its alias (`name:tag`).
    pub alias: String,
    /// Its sha256, when known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its file's size.
    pub size: u64,
    /// `generation`, `embedding` or `rerank`.
    pub kind: String,
    /// What it needs in memory to run there (the hive's one estimate).
    pub needs_bytes: u64,
    /// The device it would run on there.
    pub device: String,
}

/// A model a hive has loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedCard {
    /// The catalog id.
    pub model: String,
    /// Slots free now.
    pub slots_free: u64,
    /// Requests waiting for a slot.
    pub queue: u64,
}

/// The model a request wants: the name it gave, and, when this hive has that model,
/// its alias and sha256, by which a peer's copy is found under another id.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The request's `model`.
    pub name: &'a str,
    /// This hive's alias for it.
    pub alias: Option<&'a str>,
    /// Its sha256, when known here.
    pub sha256: Option<&'a str>,
}

impl<'a> Wanted<'a> {
    /// A model known by its name alone.
    pub fn name(name: &'a str) -> Self {
        Self {
            name,
            alias: None,
            sha256: None,
        }
    }
}

impl Card {
    /// The model of this card that `wanted` is: the same sha256, or the id, the
    /// alias, or an alias's name without the tag when one model has it.
    pub fn model(&self, wanted: Wanted<'_>) -> Option<&ModelCard> {
        if let Some(sha) = wanted.sha256
            && let Some(m) = self.models.iter().find(|m| {
                m.sha256
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(sha))
            })
        {
            return Some(m);
        }
        if let Some(alias) = wanted.alias
            && let Some(m) = self
                .models
                .iter()
                .find(|m| m.alias.eq_ignore_ascii_case(alias))
        {
            return Some(m);
        }
        let name = wanted.name;
        let lower = name.trim().to_ascii_lowercase();
        if let Some(m) = self
            .models
            .iter()
            .find(|m| m.id == name || m.alias.eq_ignore_ascii_case(&lower))
        {
            return Some(m);
        }
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        let mut same = self
            .models
            .iter()
            .filter(|m| m.alias.split(':').next() == Some(bare));
        match (same.next(), same.next()) {
            (Some(m), None) => Some(m),
            _ => None,
        }
    }

    /// The most room left on any of its devices.
    pub fn most_free(&self) -> u64 {
        self.devices.iter().map(|d| d.free_bytes).max().unwrap_or(0)
    }

    /// Whether `model` fits in what is left of its device now.
    fn has_room_for(&self, model: &ModelCard) -> bool {
        self.devices
            .iter()
            .any(|d| d.name == model.device && d.free_bytes >= model.needs_bytes)
    }

    fn slots_free(&self, model_id: &str) -> u64 {
        self.loaded
            .iter()
            .filter(|l| l.model == model_id)
            .map(|l| l.slots_free)
            .sum()
    }
}

/// Why a peer was picked, in the order the rules try them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// It has the model loaded with a slot free.
    LoadedWithASlot,
    /// It has the model and room to load it.
    HasItAndRoom,
    /// It has the most room, and will pull the model.
    MostRoom,
}

/// A peer a request may go to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its card.
    pub card: Card,
    /// By which rule.
    pub why: Why,
}

/// What this hive can do about a request's model itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Here {
    /// It has it loaded with a slot free: it serves it.
    Ready,
    /// It has it and it fits its budget: a peer only when it has it loaded with a
    /// slot free, else it loads or queues here.
    Fits,
    /// It has it but it can never fit here.
    TooBig,
    /// It does not have it; the name is a reference it could pull (`pullable`),
    /// with this much room.
    Missing {
        /// Whether the name is a reference a hive can pull.
        pullable: bool,
        /// The most room this hive has on a device.
        room: u64,
    },
}

/// The peers, in the order a request for `name` should try them, given what this
/// hive can do itself.
pub fn candidates<'a>(
    peers: impl IntoIterator<Item = &'a Card>,
    name: Wanted<'_>,
    here: Here,
) -> Vec<Candidate> {
    let peers: Vec<&Card> = peers.into_iter().collect();
    if here == Here::Ready {
        return Vec::new();
    }
    let mut loaded: Vec<(&Card, u64)> = peers
        .iter()
        .filter_map(|c| {
            let m = c.model(name)?;
            let free = c.slots_free(&m.id);
            (free > 0).then_some((*c, free))
        })
        .collect();
    loaded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut out: Vec<Candidate> = loaded
        .into_iter()
        .map(|(c, _)| Candidate {
            card: c.clone(),
            why: Why::LoadedWithASlot,
        })
        .collect();
    if here == Here::Fits {
        return out;
    }
    let mut with_room: Vec<&Card> = peers
        .iter()
        .filter(|c| !out.iter().any(|o| o.card.id == c.id))
        .filter(|c| c.model(name).is_some_and(|m| c.has_room_for(m)))
        .copied()
        .collect();
    with_room.sort_by(|a, b| {
        b.most_free()
            .cmp(&a.most_free())
            .then_with(|| a.id.cmp(&b.id))
    });
    out.extend(with_room.into_iter().map(|c| Candidate {
        card: c.clone(),
        why: Why::HasItAndRoom,
    }));
    if let Here::Missing {
        pullable: true,
        room,
    } = here
    {
        // the hive with the most room pulls it, when that is not this one
        if out.is_empty()
            && let Some(best) = peers
                .iter()
                .filter(|c| c.model(name).is_none())
                .max_by(|a, b| {
                    a.most_free()
                        .cmp(&b.most_free())
                        .then_with(|| b.id.cmp(&a.id))
                })
            && best.most_free() > room
        {
            out.push(Candidate {
                card: (*best).clone(),
                why: Why::MostRoom,
            });
        }
    }
    out
}

/// This hive's link to etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Link {
    /// Not joined yet.
    Joining,
    /// Its card is on etcd and the watch runs.
    Joined,
    /// etcd cannot be reached; the hive serves its own models and tries again.
    Unreachable {
        /// Why, in words.
        reason: String,
    },
    /// Another hive holds this hive's id; the hive serves its own models and tries
    /// again (the other's lease may expire).
    Refused {
        /// Why, in words, with the other hive's URL.
        reason: String,
    },
}

/// The fleet as this hive knows it.
#[derive(Debug)]
pub struct Fleet {
    /// The fleet's name.
    pub name: String,
    /// This hive's id.
    pub hive_id: String,
    /// The token requests between hives carry, when the fleet has one.
    pub token: Option<String>,
    peers: RwLock<BTreeMap<String, Card>>,
    own: RwLock<Option<Card>>,
    link: Mutex<Link>,
}

impl Fleet {
    /// A fleet not joined yet.
    pub fn new(name: String, hive_id: String, token: Option<String>) -> Self {
        Self {
            name,
            hive_id,
            token,
            peers: RwLock::default(),
            own: RwLock::default(),
            link: Mutex::new(Link::Joining),
        }
    }

    /// The etcd key prefix of the fleet's hives.
    pub fn prefix(&self) -> String {
        format!("/rbee/{}/hives/", self.name)
    }

    /// This hive's key.
    pub fn key(&self) -> String {
        format!("{}{}", self.prefix(), self.hive_id)
    }

    /// The peers (this hive left out), by id.
    pub fn peers(&self) -> Vec<Card> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// This hive's card as last published.
    pub fn own(&self) -> Option<Card> {
        self.own
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the card this hive published.
    pub fn set_own(&self, card: Card) {
        *self.own.write().unwrap_or_else(PoisonError::into_inner) = Some(card);
    }

    /// The link to etcd.
    pub fn link(&self) -> Link {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the link's state; a link lost forgets every peer, since their leases
    /// can no longer be seen to expire.
    pub fn set_link(&self, link: Link) {
        if link != Link::Joined && link != Link::Joining {
            self.peers
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = link;
    }

    /// Takes a value read at `key`: a peer's card, or nothing (this hive's own, a
    /// key outside the prefix, a value too large or not a card, a card whose id is
    /// not its key's). Says why a value was not taken.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let Some(id) = key.strip_prefix(&self.prefix()) else {
            return Err(format!("{key}: outside the fleet"));
        };
        if id == self.hive_id {
            return Ok(());
        }
        if value.len() > MAX_CARD_BYTES {
            return Err(format!(
                "{key}: {} bytes, more than a card may be",
                value.len()
            ));
        }
        let card: Card =
            serde_json::from_slice(value).map_err(|e| format!("{key}: not a hive's card: {e}"))?;
        if card.id != id || !is_hive_id(id) {
            return Err(format!("{key}: the card says it is {:?}", card.id));
        }
        check_url(&card.url).map_err(|e| format!("{key}: {e}"))?;
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if peers.len() >= MAX_PEERS && !peers.contains_key(id) {
            return Err(format!("{key}: more than {MAX_PEERS} hives; ignored"));
        }
        peers.insert(id.to_owned(), card);
        Ok(())
    }

    /// Forgets the peer at `key` (its lease expired, or it left).
    pub fn delete(&self, key: &str) {
        if let Some(id) = key.strip_prefix(&self.prefix()) {
            self.peers
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }

    /// Forgets every peer, before a fresh read of the prefix.
    pub fn reset(&self) {
        self.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The peers a request for `name` may go to, in order.
    pub fn route(&self, name: Wanted<'_>, here: Here) -> Vec<Candidate> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        candidates(peers.values(), name, here)
    }
}

/// Whether `id` can be a hive's id: 1 to 64 letters, digits and `-`.
pub fn is_hive_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A peer's URL must be plain `http(s)://host[:port]`, with no user, path, query or
/// fragment: the fleet token is sent there.
pub fn check_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(format!(
            "bad URL {url:?}: a hive's URL is http(s)://HOST[:PORT] and nothing more"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str, free: u64, models: &[(&str, u64)], loaded: &[(&str, u64)]) -> Card {
        Card {
            id: id.into(),
            url: format!("http://127.0.0.1:{}", 7000 + id.len()),
            version: "0".into(),
            devices: vec![DeviceCard {
                name: "RAM".into(),
                budget_bytes: 1 << 40,
                free_bytes: free,
            }],
            models: models
                .iter()
                .map(|(m, need)| ModelCard {
                    id: format!("hf:org/{m}/{m}.gguf"),
                    alias: format!("{m}:q4"),
                    sha256: None,
                    size: *need,
                    kind: "generation".into(),
                    needs_bytes: *need,
                    device: "RAM".into(),
                })
                .collect(),
            loaded: loaded
                .iter()
                .map(|(m, free)| LoadedCard {
                    model: format!("hf:org/{m}/{m}.gguf"),
                    slots_free: *free,
                    queue: 0,
                })
                .collect(),
        }
    }

    fn ids(c: &[Candidate]) -> Vec<(&str, Why)> {
        c.iter().map(|c| (c.card.id.as_str(), c.why)).collect()
    }

    #[test]
    fn a_loaded_slot_first_then_room_then_the_most_room() {
        let a = card("a", 100, &[("m", 50)], &[("m", 0)]);
        let b = card("bb", 10, &[("m", 50)], &[("m", 2)]);
        let c = card("ccc", 80, &[("m", 50)], &[]);
        let d = card("dddd", 500, &[], &[]);
        let peers = [a.clone(), b.clone(), c.clone(), d.clone()];
        let missing = Here::Missing {
            pullable: true,
            room: 0,
        };
        // b has a slot; a and c have room (a more); d has no copy
        assert_eq!(
            ids(&candidates(&peers, Wanted::name("m"), missing)),
            [
                ("bb", Why::LoadedWithASlot),
                ("a", Why::HasItAndRoom),
                ("ccc", Why::HasItAndRoom)
            ]
        );
        // by alias, by bare name, by id
        assert_eq!(candidates(&peers, Wanted::name("m:q4"), missing).len(), 3);
        assert_eq!(
            candidates(&peers, Wanted::name("hf:org/m/m.gguf"), missing).len(),
            3
        );
        // here fits: only a loaded slot is worth a hop
        assert_eq!(
            ids(&candidates(&peers, Wanted::name("m"), Here::Fits)),
            [("bb", Why::LoadedWithASlot)]
        );
        assert!(candidates(&peers, Wanted::name("m"), Here::Ready).is_empty());
        // nobody has it: the most room pulls it, if more than here
        assert_eq!(
            ids(&candidates(&peers, Wanted::name("other"), missing)),
            [("dddd", Why::MostRoom)]
        );
        assert!(
            candidates(
                &peers,
                Wanted::name("other"),
                Here::Missing {
                    pullable: true,
                    room: 1000
                }
            )
            .is_empty()
        );
        assert!(
            candidates(
                &peers,
                Wanted::name("other"),
                Here::Missing {
                    pullable: false,
                    room: 0
                }
            )
            .is_empty()
        );
        // a copy under another id and alias is found by its sha256
        let mut other = card("e", 100, &[("x", 50)], &[]);
        other.models[0].sha256 = Some("AB12".into());
        let by_sha = Wanted {
            name: "file:/here/m.gguf",
            alias: Some("mine:q4"),
            sha256: Some("ab12"),
        };
        assert_eq!(
            ids(&candidates([&other], by_sha, Here::TooBig)),
            [("e", Why::HasItAndRoom)]
        );
        // too big here, no room on a peer that has it: nothing
        let tight = [card("a", 10, &[("m", 50)], &[])];
        assert!(candidates(&tight, Wanted::name("m"), Here::TooBig).is_empty());
    }

    #[test]
    fn only_well_formed_cards_of_the_fleet_are_taken() {
        let f = Fleet::new("lab".into(), "me".into(), None);
        let good = card("b", 1, &[], &[]);
        let json = serde_json::to_vec(&good).unwrap();
        assert!(f.put("/rbee/lab/hives/b", &json).is_ok());
        assert_eq!(f.peers(), std::slice::from_ref(&good));
        // its own card is not a peer
        let mine = serde_json::to_vec(&card("me", 1, &[], &[])).unwrap();
        assert!(f.put("/rbee/lab/hives/me", &mine).is_ok());
        assert_eq!(f.peers().len(), 1);
        // another fleet, a lying id, garbage, a URL with a path or a user
        assert!(f.put("/rbee/other/hives/b", &json).is_err());
        assert!(f.put("/rbee/lab/hives/c", &json).is_err());
        assert!(f.put("/rbee/lab/hives/c", b"{not json").is_err());
        let mut odd = card("b\nx", 1, &[], &[]);
        odd.url = "http://h:1".into();
        assert!(
            f.put("/rbee/lab/hives/b\nx", &serde_json::to_vec(&odd).unwrap())
                .is_err()
        );
        for url in [
            "file:///etc/passwd",
            "http://h/evil/path",
            "http://u:p@h:1",
            "http://h:1/?q",
        ] {
            let mut bad = card("d", 1, &[], &[]);
            bad.url = url.into();
            assert!(
                f.put("/rbee/lab/hives/d", &serde_json::to_vec(&bad).unwrap())
                    .is_err(),
                "{url}"
            );
        }
        assert!(
            f.put("/rbee/lab/hives/e", &vec![b' '; MAX_CARD_BYTES + 1])
                .is_err()
        );
        f.delete("/rbee/lab/hives/b");
        assert!(f.peers().is_empty());
        // a lost link forgets the peers
        f.put("/rbee/lab/hives/b", &json).unwrap();
        f.set_link(Link::Unreachable {
            reason: "down".into(),
        });
        assert!(f.peers().is_empty());
    }
}
