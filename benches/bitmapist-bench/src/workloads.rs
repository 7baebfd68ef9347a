//! Operation generators for the load workloads: W1 (bitmapist's
//! `mark_event` as MULTI, 3 SETBIT, EXEC) and W2 (point operations on a
//! 100k-key set).

use crate::dataset::{self, Dataset};
use crate::loadgen::OpGen;
use crate::resp;
use crate::rng::{Rng, Zipf};
use std::sync::Arc;

/// W1: one `mark_event(name, uid)`: MULTI, SETBIT month/week/day, EXEC.
pub struct MarkEvent {
    rng: Rng,
    zipf: Arc<Zipf>,
    /// [event][day of the week] → (month key, week key, day key)
    keys: Arc<Vec<Vec<[String; 3]>>>,
    users: u32,
}

/// The shared part of W1's generators.
pub struct MarkEventShared {
    zipf: Arc<Zipf>,
    keys: Arc<Vec<Vec<[String; 3]>>>,
    users: u32,
    seed: u64,
}

impl MarkEventShared {
    pub fn new(ds: &Dataset, seed: u64) -> MarkEventShared {
        let week = ds.current_week();
        let keys = (0..ds.params.events)
            .map(|e| {
                let name = dataset::event_name(e);
                week.iter()
                    .map(|&d| {
                        [
                            dataset::month_key(&name, d),
                            dataset::week_key(&name, d),
                            dataset::day_key(&name, d),
                        ]
                    })
                    .collect()
            })
            .collect();
        MarkEventShared {
            zipf: Arc::new(Zipf::new(ds.params.events as usize, 1.2)),
            keys: Arc::new(keys),
            users: ds.params.users,
            seed,
        }
    }

    pub fn generator(&self, conn: usize) -> Box<dyn OpGen> {
        Box::new(MarkEvent {
            rng: Rng::derive(self.seed, 11, conn as u64),
            zipf: self.zipf.clone(),
            keys: self.keys.clone(),
            users: self.users,
        })
    }
}

impl OpGen for MarkEvent {
    fn next_op(&mut self, buf: &mut Vec<u8>) -> u32 {
        let e = self.zipf.sample(&mut self.rng);
        let days = &self.keys[e];
        let [m, w, d] = &days[self.rng.below(days.len() as u64) as usize];
        let uid = self.rng.skewed_id(self.users) as u64;
        resp::encode(buf, &["MULTI"]);
        for k in [m, w, d] {
            resp::push_array_header(buf, 4);
            resp::push_bulk(buf, b"SETBIT");
            resp::push_bulk(buf, k.as_bytes());
            resp::push_bulk_u64(buf, uid);
            resp::push_bulk(buf, b"1");
        }
        resp::encode(buf, &["EXEC"]);
        5
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PointCmd {
    SetBit,
    GetBit,
    BitCount,
    /// One third each (W6).
    Mix,
}

impl PointCmd {
    pub fn name(self) -> &'static str {
        match self {
            PointCmd::SetBit => "SETBIT",
            PointCmd::GetBit => "GETBIT",
            PointCmd::BitCount => "BITCOUNT",
            PointCmd::Mix => "SETBIT/GETBIT/BITCOUNT mix",
        }
    }
}

/// W2's key set: `w2:<i>` for i in 0..keys, offsets below `max_offset`.
pub struct PointShared {
    pub keys: Arc<Vec<String>>,
    pub max_offset: u64,
    pub seed: u64,
}

impl PointShared {
    pub fn new(keys: usize, max_offset: u64, seed: u64) -> PointShared {
        PointShared {
            keys: Arc::new((0..keys).map(|i| format!("w2:{i}")).collect()),
            max_offset,
            seed,
        }
    }

    pub fn generator(&self, cmd: PointCmd, conn: usize) -> Box<dyn OpGen> {
        Box::new(Point {
            rng: Rng::derive(self.seed, 22 + cmd as u64, conn as u64),
            keys: self.keys.clone(),
            max_offset: self.max_offset,
            cmd,
        })
    }

    /// The commands that give every key a few bits (run before W2).
    pub fn populate_commands(&self, bits_per_key: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng::derive(self.seed, 21, 0);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for k in self.keys.iter() {
            for _ in 0..bits_per_key {
                resp::push_array_header(&mut buf, 4);
                resp::push_bulk(&mut buf, b"SETBIT");
                resp::push_bulk(&mut buf, k.as_bytes());
                resp::push_bulk_u64(&mut buf, rng.below(self.max_offset));
                resp::push_bulk(&mut buf, b"1");
            }
            if buf.len() > 256 * 1024 {
                out.push(std::mem::take(&mut buf));
            }
        }
        if !buf.is_empty() {
            out.push(buf);
        }
        out
    }
}

pub struct Point {
    rng: Rng,
    keys: Arc<Vec<String>>,
    max_offset: u64,
    cmd: PointCmd,
}

impl OpGen for Point {
    fn next_op(&mut self, buf: &mut Vec<u8>) -> u32 {
        let key = &self.keys[self.rng.below(self.keys.len() as u64) as usize];
        let cmd = match self.cmd {
            PointCmd::Mix => match self.rng.below(3) {
                0 => PointCmd::SetBit,
                1 => PointCmd::GetBit,
                _ => PointCmd::BitCount,
            },
            c => c,
        };
        match cmd {
            PointCmd::SetBit => {
                resp::push_array_header(buf, 4);
                resp::push_bulk(buf, b"SETBIT");
                resp::push_bulk(buf, key.as_bytes());
                resp::push_bulk_u64(buf, self.rng.below(self.max_offset));
                resp::push_bulk(buf, b"1");
            }
            PointCmd::GetBit => {
                resp::push_array_header(buf, 3);
                resp::push_bulk(buf, b"GETBIT");
                resp::push_bulk(buf, key.as_bytes());
                resp::push_bulk_u64(buf, self.rng.below(self.max_offset));
            }
            PointCmd::BitCount | PointCmd::Mix => {
                resp::push_array_header(buf, 2);
                resp::push_bulk(buf, b"BITCOUNT");
                resp::push_bulk(buf, key.as_bytes());
            }
        }
        1
    }
}
