//! Package attributes (docs/develop/packages/FileFormat.rst, "The Package Format"): the
//! model, its attribute tree in the order `WriterImplBase::RegisterPackageInfo`
//! (src/kits/package/hpkg/WriterImplBase.cpp) writes it, and its `.PackageInfo` text
//! (docs/develop/packages/BuildingPackages.rst), which `package create` also stores in the
//! package's root.

use crate::attr::{Attr, Value};
use crate::format::{id, ARCHITECTURES, OPERATORS, UPDATE_TYPES};
use crate::version::Version;

/// A resolvable a package provides: `name [= version] [compat >= version]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provides {
    pub name: String,
    pub version: Option<Version>,
    pub compatible: Option<Version>,
}

/// `name [op version]`, in requires, supplements, conflicts and freshens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    pub name: String,
    /// The operator (an index of [`OPERATORS`]) and version.
    pub version: Option<(u8, Version)>,
}

impl std::fmt::Display for Expression {
    /// `BPackageResolvableExpression::ToString`.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some((op, v)) = &self.version {
            let op = OPERATORS.get(usize::from(*op)).copied().unwrap_or("?");
            write!(f, "{op}{v}")?;
        }
        Ok(())
    }
}

/// A global writable file (`global-writable-files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalWritableFile {
    pub path: String,
    pub is_directory: bool,
    /// Included in the package, with its update type (an index of [`UPDATE_TYPES`]).
    pub update_type: Option<u8>,
}

/// A user settings file (`user-settings-files`): never installed, only declared, with an
/// optional template the package includes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSettingsFile {
    pub path: String,
    pub is_directory: bool,
    pub template: Option<String>,
}

/// A Unix user the package needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub real_name: String,
    pub home: String,
    pub shell: String,
    pub groups: Vec<String>,
}

/// Everything a `.PackageInfo` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub summary: String,
    pub description: String,
    pub vendor: String,
    pub packager: String,
    pub base_package: String,
    /// `B_PACKAGE_FLAG_*`.
    pub flags: u32,
    /// An index of [`ARCHITECTURES`].
    pub architecture: u8,
    pub version: Version,
    pub copyrights: Vec<String>,
    pub licenses: Vec<String>,
    pub urls: Vec<String>,
    pub source_urls: Vec<String>,
    pub provides: Vec<Provides>,
    pub requires: Vec<Expression>,
    pub supplements: Vec<Expression>,
    pub conflicts: Vec<Expression>,
    pub freshens: Vec<Expression>,
    pub replaces: Vec<String>,
    pub global_writable_files: Vec<GlobalWritableFile>,
    pub user_settings_files: Vec<UserSettingsFile>,
    pub users: Vec<User>,
    pub groups: Vec<String>,
    pub post_install_scripts: Vec<String>,
    pub pre_uninstall_scripts: Vec<String>,
    /// Only in repository files.
    pub checksum: String,
    pub install_path: String,
}

/// `RegisterPackageVersion`: the major part, with minor (and micro), pre-release and
/// revision as children when present.
pub fn version_attr(attr_id: u8, v: &Version) -> Attr {
    let mut children = Vec::new();
    if !v.minor.is_empty() {
        children.push(Attr::string(id::PACKAGE_VERSION_MINOR, v.minor.clone()));
        if !v.micro.is_empty() {
            children.push(Attr::string(id::PACKAGE_VERSION_MICRO, v.micro.clone()));
        }
    }
    if !v.pre_release.is_empty() {
        children.push(Attr::string(
            id::PACKAGE_VERSION_PRE_RELEASE,
            v.pre_release.clone(),
        ));
    }
    if v.revision != 0 {
        children.push(Attr::uint(
            id::PACKAGE_VERSION_REVISION,
            u64::from(v.revision),
        ));
    }
    Attr::string(attr_id, v.major.clone()).with(children)
}

fn expressions(out: &mut Vec<Attr>, attr_id: u8, list: &[Expression]) {
    for e in list {
        let mut a = Attr::string(attr_id, e.name.clone());
        if let Some((op, v)) = &e.version {
            a.children = vec![
                Attr::uint(id::PACKAGE_RESOLVABLE_OPERATOR, u64::from(*op)),
                version_attr(id::PACKAGE_VERSION_MAJOR, v),
            ];
        }
        out.push(a);
    }
}

fn strings(out: &mut Vec<Attr>, attr_id: u8, list: &[String]) {
    out.extend(list.iter().map(|s| Attr::string(attr_id, s.clone())));
}

fn if_not_empty(out: &mut Vec<Attr>, attr_id: u8, s: &str) {
    if !s.is_empty() {
        out.push(Attr::string(attr_id, s));
    }
}

impl PackageInfo {
    /// The package attributes section's tree, in `RegisterPackageInfo`'s order.
    pub fn to_attrs(&self) -> Vec<Attr> {
        let mut out = vec![
            Attr::string(id::PACKAGE_NAME, self.name.clone()),
            Attr::string(id::PACKAGE_SUMMARY, self.summary.clone()),
            Attr::string(id::PACKAGE_DESCRIPTION, self.description.clone()),
            Attr::string(id::PACKAGE_VENDOR, self.vendor.clone()),
            Attr::string(id::PACKAGE_PACKAGER, self.packager.clone()),
        ];
        if_not_empty(&mut out, id::PACKAGE_BASE_PACKAGE, &self.base_package);
        out.push(Attr::uint(id::PACKAGE_FLAGS, u64::from(self.flags)));
        out.push(Attr::uint(
            id::PACKAGE_ARCHITECTURE,
            u64::from(self.architecture),
        ));
        out.push(version_attr(id::PACKAGE_VERSION_MAJOR, &self.version));
        strings(&mut out, id::PACKAGE_COPYRIGHT, &self.copyrights);
        strings(&mut out, id::PACKAGE_LICENSE, &self.licenses);
        strings(&mut out, id::PACKAGE_URL, &self.urls);
        strings(&mut out, id::PACKAGE_SOURCE_URL, &self.source_urls);
        for p in &self.provides {
            let mut children = Vec::new();
            if let Some(v) = &p.version {
                children.push(version_attr(id::PACKAGE_VERSION_MAJOR, v));
            }
            if let Some(v) = &p.compatible {
                children.push(version_attr(id::PACKAGE_PROVIDES_COMPATIBLE, v));
            }
            out.push(Attr::string(id::PACKAGE_PROVIDES, p.name.clone()).with(children));
        }
        expressions(&mut out, id::PACKAGE_REQUIRES, &self.requires);
        expressions(&mut out, id::PACKAGE_SUPPLEMENTS, &self.supplements);
        expressions(&mut out, id::PACKAGE_CONFLICTS, &self.conflicts);
        expressions(&mut out, id::PACKAGE_FRESHENS, &self.freshens);
        strings(&mut out, id::PACKAGE_REPLACES, &self.replaces);
        for f in &self.global_writable_files {
            let mut children = Vec::new();
            if f.is_directory {
                children.push(Attr::uint(id::PACKAGE_IS_WRITABLE_DIRECTORY, 1));
            }
            if let Some(t) = f.update_type {
                children.push(Attr::uint(
                    id::PACKAGE_WRITABLE_FILE_UPDATE_TYPE,
                    u64::from(t),
                ));
            }
            out.push(Attr::string(id::PACKAGE_GLOBAL_WRITABLE_FILE, f.path.clone()).with(children));
        }
        for f in &self.user_settings_files {
            let mut children = Vec::new();
            if f.is_directory {
                children.push(Attr::uint(id::PACKAGE_IS_WRITABLE_DIRECTORY, 1));
            } else if let Some(t) = &f.template {
                if_not_empty(&mut children, id::PACKAGE_SETTINGS_FILE_TEMPLATE, t);
            }
            out.push(Attr::string(id::PACKAGE_USER_SETTINGS_FILE, f.path.clone()).with(children));
        }
        for u in &self.users {
            let mut children = Vec::new();
            if_not_empty(&mut children, id::PACKAGE_USER_REAL_NAME, &u.real_name);
            if_not_empty(&mut children, id::PACKAGE_USER_HOME, &u.home);
            if_not_empty(&mut children, id::PACKAGE_USER_SHELL, &u.shell);
            strings(&mut children, id::PACKAGE_USER_GROUP, &u.groups);
            out.push(Attr::string(id::PACKAGE_USER, u.name.clone()).with(children));
        }
        strings(&mut out, id::PACKAGE_GROUP, &self.groups);
        strings(
            &mut out,
            id::PACKAGE_POST_INSTALL_SCRIPT,
            &self.post_install_scripts,
        );
        strings(
            &mut out,
            id::PACKAGE_PRE_UNINSTALL_SCRIPT,
            &self.pre_uninstall_scripts,
        );
        if_not_empty(&mut out, id::PACKAGE_CHECKSUM, &self.checksum);
        if_not_empty(&mut out, id::PACKAGE_INSTALL_PATH, &self.install_path);
        out
    }

    /// The canonical package file name, `name-version-architecture.hpkg`
    /// (BuildingPackages.rst, "Package File Names"; `BPackageInfo::CanonicalFileName`).
    pub fn file_name(&self) -> String {
        let arch = ARCHITECTURES
            .get(usize::from(self.architecture))
            .copied()
            .unwrap_or("any");
        format!("{}-{}-{arch}.hpkg", self.name, self.version)
    }

    /// The `.PackageInfo` text (BuildingPackages.rst's grammar): every value quoted.
    pub fn to_package_info_text(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, key: &str, v: &str| {
            t.push_str(&format!("{key}\t{}\n", quote(v)));
        };
        let list = |t: &mut String, key: &str, items: &[String]| {
            if items.is_empty() {
                return;
            }
            t.push_str(&format!("{key} {{\n"));
            for i in items {
                t.push_str(&format!("\t{}\n", quote(i)));
            }
            t.push_str("}\n");
        };
        line(&mut t, "name", &self.name);
        line(&mut t, "version", &self.version.to_string());
        let arch = ARCHITECTURES
            .get(usize::from(self.architecture))
            .copied()
            .unwrap_or("any");
        line(&mut t, "architecture", arch);
        line(&mut t, "summary", &self.summary);
        line(&mut t, "description", &self.description);
        line(&mut t, "packager", &self.packager);
        line(&mut t, "vendor", &self.vendor);
        list(&mut t, "copyrights", &self.copyrights);
        list(&mut t, "licenses", &self.licenses);
        list(&mut t, "urls", &self.urls);
        list(&mut t, "source-urls", &self.source_urls);
        let mut flags = Vec::new();
        if self.flags & crate::format::FLAG_APPROVE_LICENSE != 0 {
            flags.push("approve_license".to_string());
        }
        if self.flags & crate::format::FLAG_SYSTEM_PACKAGE != 0 {
            flags.push("system_package".to_string());
        }
        list(&mut t, "flags", &flags);
        let provides: Vec<String> = self
            .provides
            .iter()
            .map(|p| {
                let mut s = p.name.clone();
                if let Some(v) = &p.version {
                    s.push_str(&format!(" = {v}"));
                }
                if let Some(v) = &p.compatible {
                    s.push_str(&format!(" compat >= {v}"));
                }
                s
            })
            .collect();
        let exprs = |l: &[Expression]| -> Vec<String> {
            l.iter()
                .map(|e| match &e.version {
                    Some((op, v)) => format!(
                        "{} {} {v}",
                        e.name,
                        OPERATORS.get(usize::from(*op)).copied().unwrap_or("?")
                    ),
                    None => e.name.clone(),
                })
                .collect()
        };
        // Resolvables are written unquoted: their parts are separate words.
        let raw_list = |t: &mut String, key: &str, items: &[String]| {
            if items.is_empty() {
                return;
            }
            t.push_str(&format!("{key} {{\n"));
            for i in items {
                t.push_str(&format!("\t{i}\n"));
            }
            t.push_str("}\n");
        };
        raw_list(&mut t, "provides", &provides);
        raw_list(&mut t, "requires", &exprs(&self.requires));
        raw_list(&mut t, "supplements", &exprs(&self.supplements));
        raw_list(&mut t, "conflicts", &exprs(&self.conflicts));
        raw_list(&mut t, "freshens", &exprs(&self.freshens));
        list(&mut t, "replaces", &self.replaces);
        let gw: Vec<String> = self
            .global_writable_files
            .iter()
            .map(|f| {
                let mut s = quote(&f.path);
                if f.is_directory {
                    s.push_str(" directory");
                }
                if let Some(u) = f.update_type.and_then(|u| UPDATE_TYPES.get(usize::from(u))) {
                    s.push_str(&format!(" {u}"));
                }
                s
            })
            .collect();
        raw_list(&mut t, "global-writable-files", &gw);
        let us: Vec<String> = self
            .user_settings_files
            .iter()
            .map(|f| {
                let mut s = quote(&f.path);
                if f.is_directory {
                    s.push_str(" directory");
                } else if let Some(tp) = &f.template {
                    s.push_str(&format!(" template {}", quote(tp)));
                }
                s
            })
            .collect();
        raw_list(&mut t, "user-settings-files", &us);
        let users: Vec<String> = self
            .users
            .iter()
            .map(|u| {
                let mut s = quote(&u.name);
                if !u.real_name.is_empty() {
                    s.push_str(&format!(" real-name {}", quote(&u.real_name)));
                }
                s.push_str(&format!(" home {}", quote(&u.home)));
                if !u.shell.is_empty() {
                    s.push_str(&format!(" shell {}", quote(&u.shell)));
                }
                if !u.groups.is_empty() {
                    let g: Vec<String> = u.groups.iter().map(|g| quote(g)).collect();
                    s.push_str(&format!(" groups {}", g.join(" ")));
                }
                s
            })
            .collect();
        raw_list(&mut t, "users", &users);
        list(&mut t, "groups", &self.groups);
        list(&mut t, "post-install-scripts", &self.post_install_scripts);
        list(&mut t, "pre-uninstall-scripts", &self.pre_uninstall_scripts);
        if !self.base_package.is_empty() {
            line(&mut t, "base-package", &self.base_package);
        }
        if !self.install_path.is_empty() {
            line(&mut t, "install-path", &self.install_path);
        }
        t
    }
}

/// A quoted `.PackageInfo` string: `"` and `\` escaped with `\`.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Reads a version back from its attribute (major with children).
pub(crate) fn version_from(a: &Attr) -> Result<Version, String> {
    let Value::String(major) = &a.value else {
        return Err("a version's major part is not a string".into());
    };
    let mut v = Version {
        major: major.clone(),
        ..Version::default()
    };
    for c in &a.children {
        match (c.id, &c.value) {
            (id::PACKAGE_VERSION_MINOR, Value::String(s)) => v.minor = s.clone(),
            (id::PACKAGE_VERSION_MICRO, Value::String(s)) => v.micro = s.clone(),
            (id::PACKAGE_VERSION_PRE_RELEASE, Value::String(s)) => v.pre_release = s.clone(),
            (id::PACKAGE_VERSION_REVISION, Value::Uint(r)) => {
                v.revision =
                    u32::try_from(*r).map_err(|_| format!("revision {r} is over 2^32-1"))?
            }
            (other, _) => return Err(format!("unexpected {} in a version", name_of(other))),
        }
    }
    if v.major.is_empty() {
        return Err("empty major version".into());
    }
    Ok(v)
}

pub(crate) fn name_of(attr_id: u8) -> String {
    match crate::format::ID_NAMES.get(usize::from(attr_id)) {
        Some(n) => format!("attribute {attr_id} ({n})"),
        None => format!("attribute {attr_id} (unknown)"),
    }
}

fn expression_from(a: &Attr, name: &str) -> Result<Expression, String> {
    let mut e = Expression {
        name: name.to_string(),
        version: None,
    };
    let op = a.child(id::PACKAGE_RESOLVABLE_OPERATOR);
    let ver = a.child(id::PACKAGE_VERSION_MAJOR);
    match (op, ver) {
        (None, None) => {}
        (Some(op), Some(v)) => {
            let Value::Uint(op) = op.value else {
                return Err(format!("`{name}`: the resolvable operator is not a uint"));
            };
            let op = u8::try_from(op)
                .ok()
                .filter(|o| usize::from(*o) < OPERATORS.len())
                .ok_or_else(|| format!("`{name}`: resolvable operator {op} is not one of 0..=5"))?;
            e.version = Some((op, version_from(v).map_err(|m| format!("`{name}`: {m}"))?));
        }
        _ => {
            return Err(format!(
                "`{name}`: an operator without a version or the reverse"
            ))
        }
    }
    Ok(e)
}

impl PackageInfo {
    /// The model of a package attributes section. `strict`: an attribute this format
    /// version does not define is an error (a file of a greater minor version may have
    /// some; FileFormat.rst says to ignore them there).
    pub fn from_attrs(attrs: &[Attr], strict: bool) -> Result<PackageInfo, String> {
        let mut p = PackageInfo::default();
        let (mut name, mut arch, mut version) = (false, false, false);
        for a in attrs {
            let s = match &a.value {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            };
            let need_str = || s.ok_or_else(|| format!("{} is not a string", name_of(a.id)));
            match a.id {
                id::PACKAGE_NAME => {
                    p.name = need_str()?.into();
                    name = true;
                }
                id::PACKAGE_SUMMARY => p.summary = need_str()?.into(),
                id::PACKAGE_DESCRIPTION => p.description = need_str()?.into(),
                id::PACKAGE_VENDOR => p.vendor = need_str()?.into(),
                id::PACKAGE_PACKAGER => p.packager = need_str()?.into(),
                id::PACKAGE_BASE_PACKAGE => p.base_package = need_str()?.into(),
                id::PACKAGE_CHECKSUM => p.checksum = need_str()?.into(),
                id::PACKAGE_INSTALL_PATH => p.install_path = need_str()?.into(),
                id::PACKAGE_FLAGS => {
                    let Value::Uint(f) = a.value else {
                        return Err("package:flags is not a uint".into());
                    };
                    p.flags = u32::try_from(f).map_err(|_| format!("flags {f:#x} over 32 bits"))?;
                }
                id::PACKAGE_ARCHITECTURE => {
                    let Value::Uint(v) = a.value else {
                        return Err("package:architecture is not a uint".into());
                    };
                    p.architecture = u8::try_from(v)
                        .ok()
                        .filter(|v| usize::from(*v) < ARCHITECTURES.len())
                        .ok_or_else(|| format!("unknown architecture {v}"))?;
                    arch = true;
                }
                id::PACKAGE_VERSION_MAJOR => {
                    p.version = version_from(a)?;
                    version = true;
                }
                id::PACKAGE_COPYRIGHT => p.copyrights.push(need_str()?.into()),
                id::PACKAGE_LICENSE => p.licenses.push(need_str()?.into()),
                id::PACKAGE_URL => p.urls.push(need_str()?.into()),
                id::PACKAGE_SOURCE_URL => p.source_urls.push(need_str()?.into()),
                id::PACKAGE_REPLACES => p.replaces.push(need_str()?.into()),
                id::PACKAGE_GROUP => p.groups.push(need_str()?.into()),
                id::PACKAGE_POST_INSTALL_SCRIPT => p.post_install_scripts.push(need_str()?.into()),
                id::PACKAGE_PRE_UNINSTALL_SCRIPT => {
                    p.pre_uninstall_scripts.push(need_str()?.into())
                }
                id::PACKAGE_PROVIDES => {
                    let n = need_str()?;
                    let mut r = Provides {
                        name: n.into(),
                        ..Provides::default()
                    };
                    for c in &a.children {
                        match c.id {
                            id::PACKAGE_VERSION_MAJOR => r.version = Some(version_from(c)?),
                            id::PACKAGE_PROVIDES_COMPATIBLE => {
                                r.compatible = Some(version_from(c)?)
                            }
                            other => {
                                return Err(format!(
                                    "provides `{n}`: unexpected {}",
                                    name_of(other)
                                ))
                            }
                        }
                    }
                    p.provides.push(r);
                }
                id::PACKAGE_REQUIRES => p.requires.push(expression_from(a, need_str()?)?),
                id::PACKAGE_SUPPLEMENTS => p.supplements.push(expression_from(a, need_str()?)?),
                id::PACKAGE_CONFLICTS => p.conflicts.push(expression_from(a, need_str()?)?),
                id::PACKAGE_FRESHENS => p.freshens.push(expression_from(a, need_str()?)?),
                id::PACKAGE_GLOBAL_WRITABLE_FILE => {
                    let mut f = GlobalWritableFile {
                        path: need_str()?.into(),
                        is_directory: false,
                        update_type: None,
                    };
                    for c in &a.children {
                        match (c.id, &c.value) {
                            (id::PACKAGE_IS_WRITABLE_DIRECTORY, Value::Uint(v)) => {
                                f.is_directory = *v != 0
                            }
                            (id::PACKAGE_WRITABLE_FILE_UPDATE_TYPE, Value::Uint(v)) => {
                                f.update_type = Some(
                                    u8::try_from(*v)
                                        .ok()
                                        .filter(|v| usize::from(*v) < UPDATE_TYPES.len())
                                        .ok_or_else(|| format!("unknown update type {v}"))?,
                                )
                            }
                            (other, _) => {
                                return Err(format!(
                                    "global writable file `{}`: unexpected {}",
                                    f.path,
                                    name_of(other)
                                ))
                            }
                        }
                    }
                    p.global_writable_files.push(f);
                }
                id::PACKAGE_USER_SETTINGS_FILE => {
                    let mut f = UserSettingsFile {
                        path: need_str()?.into(),
                        is_directory: false,
                        template: None,
                    };
                    for c in &a.children {
                        match (c.id, &c.value) {
                            (id::PACKAGE_IS_WRITABLE_DIRECTORY, Value::Uint(v)) => {
                                f.is_directory = *v != 0
                            }
                            (id::PACKAGE_SETTINGS_FILE_TEMPLATE, Value::String(t)) => {
                                f.template = Some(t.clone())
                            }
                            (other, _) => {
                                return Err(format!(
                                    "user settings file `{}`: unexpected {}",
                                    f.path,
                                    name_of(other)
                                ))
                            }
                        }
                    }
                    p.user_settings_files.push(f);
                }
                id::PACKAGE_USER => {
                    let mut u = User {
                        name: need_str()?.into(),
                        ..User::default()
                    };
                    for c in &a.children {
                        let Value::String(s) = &c.value else {
                            return Err(format!(
                                "user `{}`: {} is not a string",
                                u.name,
                                name_of(c.id)
                            ));
                        };
                        match c.id {
                            id::PACKAGE_USER_REAL_NAME => u.real_name = s.clone(),
                            id::PACKAGE_USER_HOME => u.home = s.clone(),
                            id::PACKAGE_USER_SHELL => u.shell = s.clone(),
                            id::PACKAGE_USER_GROUP => u.groups.push(s.clone()),
                            other => {
                                return Err(format!(
                                    "user `{}`: unexpected {}",
                                    u.name,
                                    name_of(other)
                                ))
                            }
                        }
                    }
                    p.users.push(u);
                }
                other if strict || other < id::COUNT => {
                    return Err(format!(
                        "{} does not belong in the package attributes",
                        name_of(other)
                    ))
                }
                _ => {}
            }
        }
        for (have, what) in [(name, "name"), (version, "version"), (arch, "architecture")] {
            if !have {
                return Err(format!("the package attributes have no {what}"));
            }
        }
        Ok(p)
    }
}
