//! An nbdkit plugin over the vdiskview image model: any image vdiskview reads (VHD fixed,
//! dynamic and differencing, QCOW2 with backing chains, raw) served over NBD, read-write
//! through the write engine.
//!
//! `nbdkit -U SOCK target/release/libvdiskview_nbdkit.so file=disk.vhd [readonly=true] [format=auto]`
//!
//! One image is shared by every connection behind a read-write lock: reads run in parallel,
//! writes (and flushes) one at a time. As with qemu-nbd, a write returns before it is
//! durable: a qcow2 write leaves its L2 and L1 entries and releases in a write-back cache
//! in memory (reads see them), VHD and the other formats their last flush; the client's
//! NBD FLUSH, a write with FUA, a connection's close and a timer (every second) write that
//! metadata in qemu's order, a flush before each group (data and refcounts, L2, L1,
//! releases), so a crash leaves every cluster old or new and at worst leaked clusters, and
//! loses nothing flushed. One image and one file for every connection: a flush on any
//! connection makes every completed write durable, so multi-conn stays truthful.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use nbdkit::*;
use vdiskview_core::image::{self, Format, Image, OpenOptions};

struct Config {
    file: Option<String>,
    readonly: bool,
    format: Option<Format>,
}

static CONFIG: Mutex<Config> = Mutex::new(Config { file: None, readonly: false, format: None });
static IMAGE: OnceLock<std::result::Result<Arc<RwLock<Image>>, (i32, String)>> = OnceLock::new();

/// The errno comes from the error's variant (an io error keeps its own: ENOSPC stays
/// ENOSPC), never from its message.
fn err(e: image::Error) -> Error {
    Error::new(e.errno(), e.to_string())
}

/// The image, opened by the first connection: for writing unless the export is read-only
/// (`readonly=true`, or nbdkit's `-r`, which makes every open read-only).
fn image(readonly: bool) -> Result<Arc<RwLock<Image>>> {
    let r = IMAGE.get_or_init(|| {
        let cfg = CONFIG.lock().unwrap();
        let file = cfg.file.clone().ok_or((libc::EINVAL, "file= is required".to_string()))?;
        let opts = OpenOptions { format: cfg.format, write: !(cfg.readonly || readonly), ..Default::default() };
        let img = image::open(std::path::Path::new(&file), &opts).map_err(|e| (e.errno(), e.to_string()))?;
        let writable = img.layers[0].layer.file().writable();
        let img = Arc::new(RwLock::new(img));
        if writable {
            // writes without FUA return before their last flush; this thread bounds how long
            // such a write stays in the page cache only
            img.read().unwrap().set_lazy_flush(true);
            let weak = Arc::downgrade(&img);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(img) = weak.upgrade() else { break };
                let r = img.write().unwrap().flush();
                if let Err(e) = r {
                    nbdkit::debug!("vdiskview: background flush: {}", e);
                }
            });
        }
        Ok(img)
    });
    r.clone().map_err(|(errno, m)| Error::new(errno, m))
}

struct Handle {
    img: Arc<RwLock<Image>>,
    readonly: bool,
}

impl Server for Handle {
    fn name() -> &'static str {
        "vdiskview"
    }

    fn description() -> Option<&'static str> {
        Some("Serves VHD (fixed, dynamic, differencing), QCOW2 (with backing chains) and raw images through vdiskview's image model.")
    }

    fn config_help() -> Option<&'static str> {
        Some("file=<IMAGE>       (required) the image to serve\nreadonly=true|false serve read-only (also nbdkit -r)\nformat=auto|NAME     probe, or force a format (vhd, vhdx, qcow2, vmdk, vdi, raw)")
    }

    fn config(key: &str, value: &str) -> Result<()> {
        let mut cfg = CONFIG.lock().unwrap();
        match key {
            "file" => cfg.file = Some(value.to_string()),
            "readonly" => {
                cfg.readonly = match value {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => return Err(Error::new(libc::EINVAL, format!("readonly={}: expected true or false", value))),
                }
            }
            "format" => {
                cfg.format = match value {
                    "auto" => None,
                    v => Some(Format::parse(v).ok_or_else(|| Error::new(libc::EINVAL, format!("format={}: expected auto or one of {}", v, Format::all().map(|f| f.name()).collect::<Vec<_>>().join(", "))))?),
                }
            }
            _ => return Err(Error::new(libc::EINVAL, format!("unknown parameter {}", key))),
        }
        Ok(())
    }

    fn config_complete() -> Result<()> {
        let cfg = CONFIG.lock().unwrap();
        match &cfg.file {
            None => Err(Error::new(libc::EINVAL, "file= is required")),
            Some(f) if !std::path::Path::new(f).exists() => Err(Error::new(libc::ENOENT, format!("{}: no such file", f))),
            Some(_) => Ok(()),
        }
    }

    fn thread_model() -> Result<ThreadModel> {
        Ok(ThreadModel::Parallel)
    }

    fn open(readonly: bool) -> Result<Box<dyn Server>> {
        let img = image(readonly)?;
        let ro = readonly || CONFIG.lock().unwrap().readonly || !img.read().unwrap().layers[0].layer.file().writable();
        Ok(Box::new(Handle { img, readonly: ro }))
    }

    fn get_size(&self) -> Result<i64> {
        Ok(self.img.read().unwrap().virtual_size() as i64)
    }

    fn can_write(&self) -> Result<bool> {
        Ok(!self.readonly)
    }

    fn can_flush(&self) -> Result<bool> {
        Ok(true)
    }

    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }

    fn can_extents(&self) -> Result<bool> {
        Ok(true)
    }

    fn can_zero(&self) -> Result<bool> {
        Ok(!self.readonly)
    }

    fn can_trim(&self) -> Result<bool> {
        Ok(false)
    }

    fn can_fua(&self) -> Result<FuaFlags> {
        // write and zero honour Flags::FUA themselves (a flush after the request)
        Ok(FuaFlags::Native)
    }

    fn can_cache(&self) -> Result<CacheFlags> {
        Ok(CacheFlags::None)
    }

    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }

    fn is_rotational(&self) -> Result<bool> {
        Ok(false)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.img.read().unwrap().read(offset, buf).map_err(err)
    }

    fn write_at(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        if self.readonly {
            return Err(Error::new(libc::EROFS, "the export is read-only"));
        }
        let mut img = self.img.write().unwrap();
        img.write(offset, buf).map_err(err)?;
        if flags.contains(Flags::FUA) {
            img.flush().map_err(err)?;
        }
        Ok(())
    }

    fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        if self.readonly {
            return Err(Error::new(libc::EROFS, "the export is read-only"));
        }
        let mut img = self.img.write().unwrap();
        // nothing to do where the range already reads as zero
        let exts = img.extents(offset, count as u64).map_err(err)?;
        for e in exts {
            if e.kind.reads_zero() {
                continue;
            }
            let zeros = vec![0u8; e.len.min(1 << 20) as usize];
            let mut pos = e.virt;
            while pos < e.virt + e.len {
                let n = (e.virt + e.len - pos).min(zeros.len() as u64) as usize;
                img.write(pos, &zeros[..n]).map_err(err)?;
                pos += n as u64;
            }
        }
        if flags.contains(Flags::FUA) {
            img.flush().map_err(err)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // every write that completed, on any connection, becomes durable (the write lock:
        // metadata held in memory is written out, in its order)
        self.img.write().unwrap().flush().map_err(err)
    }

    fn extents(&self, count: u32, offset: u64, _flags: Flags, h: &mut ExtentHandle) -> Result<()> {
        let img = self.img.read().unwrap();
        for e in img.extents(offset, count as u64).map_err(err)? {
            let st = e.kind.status();
            let t = if !st.zero {
                ExtentType::Allocated
            } else if st.present && st.host_allocated {
                ExtentType::Zero
            } else {
                ExtentType::HoleZero
            };
            h.add(e.virt, e.len, t)?;
        }
        Ok(())
    }
}

impl Drop for Handle {
    /// A connection closing makes what it wrote durable, as qemu-nbd does at close.
    fn drop(&mut self) {
        if !self.readonly {
            if let Ok(mut img) = self.img.write() {
                let _ = img.flush();
            }
        }
    }
}

plugin!(Handle {
    config,
    config_complete,
    config_help,
    thread_model,
    write_at,
    zero,
    flush,
    extents,
    can_write,
    can_flush,
    can_multi_conn,
    can_extents,
    can_zero,
    can_trim,
    can_fua,
    can_cache,
    can_fast_zero,
    is_rotational
});
