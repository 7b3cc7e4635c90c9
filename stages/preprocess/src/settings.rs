//! What changes pf-preprocess's output, one serialisable struct per mode, recorded as the
//! provenance params of the `cells` table (and of the image manifest) exactly as serialised:
//! the record is the settings that ran, not a second hand-typed list of them.

use serde::Serialize;

use crate::args::{Bbbc021Args, SinglecellArgs, WholeArgs};
use crate::geometry::EdgePolicy;
use crate::layout::Unannotated;
use crate::nuclei::NucleusParams;

/// `--shard i/n` as recorded.
fn shard(shard: Option<(usize, usize)>) -> Option<String> {
    shard.map(|(index, count)| format!("{index}/{count}"))
}

/// `pf-preprocess bbbc021`: nuclei detected (or read from `--centers`) and cells cropped.
#[derive(Debug, Serialize)]
pub struct Bbbc021Params<'a> {
    mode: &'static str,
    channels: &'a [String],
    crop_size_px: u16,
    edge: EdgePolicy,
    unannotated: Unannotated,
    plates: &'a [String],
    shard: Option<String>,
    centers: bool,
    /// The detector's settings; none when the centres come from `--centers`.
    nuclei: Option<NucleusParams>,
}

impl Bbbc021Args {
    /// The detector's settings, as given.
    pub fn nucleus_params(&self) -> NucleusParams {
        NucleusParams {
            smoothing_sigma: self.smoothing_sigma,
            background_block: self.background_block,
            threshold_scale: self.threshold_scale,
            declump_sigma: self.declump_sigma,
            min_distance: self.min_distance,
            min_area: self.min_area,
            max_area: self.max_area,
        }
    }

    pub fn params(&self) -> Bbbc021Params<'_> {
        Bbbc021Params {
            mode: "bbbc021",
            channels: &self.table.channels,
            crop_size_px: self.crop_size,
            edge: self.edge,
            unannotated: self.table.unannotated,
            plates: &self.table.plates,
            shard: shard(self.table.shard),
            centers: self.centers.is_some(),
            nuclei: self.centers.is_none().then(|| self.nucleus_params()),
        }
    }
}

/// `pf-preprocess whole`: whole fields resized.
#[derive(Debug, Serialize)]
pub struct WholeParams<'a> {
    mode: &'static str,
    channels: &'a [String],
    size_px: u16,
    grey: bool,
    unannotated: Unannotated,
    plates: &'a [String],
    shard: Option<String>,
}

impl WholeArgs {
    pub fn params(&self) -> WholeParams<'_> {
        WholeParams {
            mode: "whole",
            channels: &self.table.channels,
            size_px: self.size,
            grey: self.grey,
            unannotated: self.table.unannotated,
            plates: &self.table.plates,
            shard: shard(self.table.shard),
        }
    }
}

/// `pf-preprocess singlecell`: pre-cropped cells read as they are.
#[derive(Debug, Serialize)]
pub struct SinglecellParams<'a> {
    mode: &'static str,
    plates: &'a [String],
    shard: Option<String>,
    layout: &'static str,
}

impl SinglecellArgs {
    pub fn params(&self) -> SinglecellParams<'_> {
        SinglecellParams {
            mode: "singlecell",
            plates: &self.plates,
            shard: shard(self.shard),
            layout: "HWC npy -> CHW",
        }
    }
}
