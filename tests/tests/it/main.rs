//! End-to-end tests: the release stage binaries on real data (`../shared/data`) and on small
//! generated fields, checked against independent Python computations (numpy, tifffile,
//! scikit-image, pyarrow, pandas) from the project's venv. One module per stage (or group of
//! stages); helpers a module shares with others are `pub(crate)` and re-exported here.

use std::path::{Path, PathBuf};

use phenoflow_e2e::{
    arg, pf_run, python, root, run, run_in, run_python, shared_data, stage, temp_files, Call,
    Outcome,
};

mod cellprofiler;
mod classifiers;
mod embed;
mod pipelines;
mod preprocess;
mod profiles;
mod report;
mod synth;
mod train;

use embed::*;
use preprocess::*;
use profiles::*;
use report::*;
use train::*;
