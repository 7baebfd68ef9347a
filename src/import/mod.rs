//! Importing data from elsewhere: the Go bitmapist-server's bbolt database
//! files (`bolt`).

pub mod bolt;
