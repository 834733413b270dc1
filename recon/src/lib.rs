//! Reconstruction math (TSDF fusion, surface extraction, wound measurement); filled in by the reconstruction work.
