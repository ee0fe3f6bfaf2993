//! Registry of the datasets we know how to fetch and verify.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Result};

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// One file of a dataset, as stored on disk (decompressed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFile {
    pub name: &'static str,
    /// Lower-case hex SHA-256 of the *decompressed* IDX file, so the check
    /// does not depend on which mirror or compression it came through.
    pub sha256: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    Mnist,
    FashionMnist,
}

const MNIST_FILES: [DataFile; 4] = [
    DataFile {
        name: TRAIN_IMAGES,
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    DataFile {
        name: TRAIN_LABELS,
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    DataFile {
        name: TEST_IMAGES,
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    DataFile {
        name: TEST_LABELS,
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

const FASHION_MNIST_FILES: [DataFile; 4] = [
    DataFile {
        name: TRAIN_IMAGES,
        sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    },
    DataFile {
        name: TRAIN_LABELS,
        sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
    DataFile {
        name: TEST_IMAGES,
        sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    },
    DataFile {
        name: TEST_LABELS,
        sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
];

impl Dataset {
    pub const ALL: [Dataset; 2] = [Dataset::Mnist, Dataset::FashionMnist];

    /// Short name used on the command line and as the directory name.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        }
    }

    /// Human-readable name for progress messages.
    pub fn title(self) -> &'static str {
        match self {
            Dataset::Mnist => "MNIST",
            Dataset::FashionMnist => "Fashion-MNIST",
        }
    }

    pub fn files(self) -> &'static [DataFile; 4] {
        match self {
            Dataset::Mnist => &MNIST_FILES,
            Dataset::FashionMnist => &FASHION_MNIST_FILES,
        }
    }

    /// `datasets/<name>`, relative to the working directory.
    pub fn default_dir(self) -> PathBuf {
        PathBuf::from("datasets").join(self.name())
    }

    /// `(images, labels)` file names of the training or test split.
    pub fn split_files(train: bool) -> (&'static str, &'static str) {
        if train {
            (TRAIN_IMAGES, TRAIN_LABELS)
        } else {
            (TEST_IMAGES, TEST_LABELS)
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        match key.as_str() {
            "mnist" => Ok(Dataset::Mnist),
            "fashion-mnist" | "fashionmnist" | "fmnist" => Ok(Dataset::FashionMnist),
            _ => {
                let known: Vec<_> = Dataset::ALL.iter().map(|d| d.name()).collect();
                bail!("unknown dataset {s:?}; known: {}", known.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for ds in Dataset::ALL {
            assert_eq!(ds.name().parse::<Dataset>().unwrap(), ds);
        }
        assert_eq!(
            "Fashion_MNIST".parse::<Dataset>().unwrap(),
            Dataset::FashionMnist
        );
        let err = "cifar10".parse::<Dataset>().unwrap_err().to_string();
        assert!(
            err.contains("cifar10") && err.contains("fashion-mnist"),
            "{err}"
        );
    }

    #[test]
    fn sums_are_well_formed() {
        for ds in Dataset::ALL {
            for f in ds.files() {
                assert_eq!(f.sha256.len(), 64);
                assert!(f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }
}
