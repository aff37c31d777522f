//! MIT Kerberos (`libkrb5`): just what password verification needs, as owning values that
//! free themselves — a library context, principals, initial credentials, a keytab — and
//! the two calls that matter: `krb5_get_init_creds_password` and `krb5_verify_init_creds`
//! with `ap_req_nofail` (no keytab entry for the server means failure, never success).
//!
//! No credential cache and no replay cache is named anywhere: the credentials live in
//! memory only and are freed (their session key zeroed by libkrb5) on drop.
//!
//! A [`Context`] and everything made from it belong to one thread (`krb5_context` is not
//! thread-safe); none of these types is `Send`.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::secret::Password;

type ErrorCode = i32;
type RawContext = *mut c_void;
type RawPrincipal = *mut c_void;
type RawKeytab = *mut c_void;

/// `krb5_data`.
#[repr(C)]
struct Data {
    magic: i32,
    length: c_uint,
    data: *mut c_char,
}

/// `krb5_keyblock`.
#[repr(C)]
struct Keyblock {
    magic: i32,
    enctype: i32,
    length: c_uint,
    contents: *mut u8,
}

/// `krb5_ticket_times`.
#[repr(C)]
struct TicketTimes {
    authtime: i32,
    starttime: i32,
    endtime: i32,
    renew_till: i32,
}

/// `krb5_creds` (120 bytes, 8-aligned on LP64 with MIT 1.20; checked in the tests).
#[repr(C)]
struct RawCreds {
    magic: i32,
    client: RawPrincipal,
    server: RawPrincipal,
    keyblock: Keyblock,
    times: TicketTimes,
    is_skey: c_uint,
    ticket_flags: i32,
    addresses: *mut *mut c_void,
    ticket: Data,
    second_ticket: Data,
    authdata: *mut *mut c_void,
}

/// `krb5_verify_init_creds_opt`.
#[repr(C)]
struct VerifyOptions {
    flags: i32,
    ap_req_nofail: c_int,
}

/// `KRB5_NT_SRV_HST`: a host-based service principal (`service/host`).
const NT_SRV_HST: i32 = 3;

type Prompter = Option<unsafe extern "C" fn()>;

#[link(name = "krb5")]
unsafe extern "C" {
    fn krb5_init_context(context: *mut RawContext) -> ErrorCode;
    fn krb5_free_context(context: RawContext);
    fn krb5_get_error_message(context: RawContext, code: ErrorCode) -> *const c_char;
    fn krb5_free_error_message(context: RawContext, message: *const c_char);
    fn krb5_parse_name(
        context: RawContext,
        name: *const c_char,
        principal: *mut RawPrincipal,
    ) -> ErrorCode;
    fn krb5_free_principal(context: RawContext, principal: RawPrincipal);
    fn krb5_sname_to_principal(
        context: RawContext,
        hostname: *const c_char,
        sname: *const c_char,
        kind: i32,
        principal: *mut RawPrincipal,
    ) -> ErrorCode;
    fn krb5_get_init_creds_opt_alloc(context: RawContext, options: *mut *mut c_void) -> ErrorCode;
    fn krb5_get_init_creds_opt_free(context: RawContext, options: *mut c_void);
    fn krb5_get_init_creds_password(
        context: RawContext,
        creds: *mut RawCreds,
        client: RawPrincipal,
        password: *const c_char,
        prompter: Prompter,
        data: *mut c_void,
        start_time: i32,
        in_tkt_service: *const c_char,
        options: *mut c_void,
    ) -> ErrorCode;
    fn krb5_free_cred_contents(context: RawContext, creds: *mut RawCreds);
    fn krb5_kt_resolve(
        context: RawContext,
        name: *const c_char,
        keytab: *mut RawKeytab,
    ) -> ErrorCode;
    fn krb5_kt_close(context: RawContext, keytab: RawKeytab) -> ErrorCode;
    fn krb5_verify_init_creds_opt_init(options: *mut VerifyOptions);
    fn krb5_verify_init_creds_opt_set_ap_req_nofail(options: *mut VerifyOptions, nofail: c_int);
    fn krb5_verify_init_creds(
        context: RawContext,
        creds: *mut RawCreds,
        server: RawPrincipal,
        keytab: RawKeytab,
        ccache: *mut *mut c_void,
        options: *mut VerifyOptions,
    ) -> ErrorCode;
}

/// A failed libkrb5 call: its error code and libkrb5's text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Krb5Error {
    pub code: i32,
    pub message: String,
}

impl Krb5Error {
    /// libkrb5 found no KDC to ask, or none answered: `KRB5_KDC_UNREACH`,
    /// `KRB5_REALM_CANT_RESOLVE`, `KRB5_REALM_UNKNOWN` (krb5.conf names no KDC for the
    /// realm) and `KRB5KDC_ERR_SVC_UNAVAILABLE` (the KDC says it can't serve now).
    pub fn no_kdc_answered(&self) -> bool {
        const KRB5_KDC_UNREACH: i32 = -1765328228;
        const KRB5_REALM_CANT_RESOLVE: i32 = -1765328164;
        const KRB5_REALM_UNKNOWN: i32 = -1765328230;
        const KRB5KDC_ERR_SVC_UNAVAILABLE: i32 = -1765328355;
        matches!(
            self.code,
            KRB5_KDC_UNREACH
                | KRB5_REALM_CANT_RESOLVE
                | KRB5_REALM_UNKNOWN
                | KRB5KDC_ERR_SVC_UNAVAILABLE
        )
    }
}

impl fmt::Display for Krb5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Krb5Error {}

/// A library context (`krb5_init_context`): reads `KRB5_CONFIG` or /etc/krb5.conf when
/// created, so a fresh one sees the configuration as it is now.
pub struct Context {
    raw: NonNull<c_void>,
    /// `krb5_context` is single-threaded: not `Send`, not `Sync`.
    _not_send: PhantomData<*mut ()>,
}

/// A principal name owned by (and not outliving) its context.
pub struct Principal<'c> {
    context: &'c Context,
    raw: NonNull<c_void>,
}

/// Initial credentials (a TGT and its session key), in memory only.
pub struct Creds<'c> {
    context: &'c Context,
    raw: Box<RawCreds>,
}

/// A resolved keytab (`krb5_kt_resolve`); the file is only read when used.
pub struct Keytab<'c> {
    context: &'c Context,
    raw: NonNull<c_void>,
}

impl Context {
    pub fn new() -> Result<Context, Krb5Error> {
        let mut raw: RawContext = ptr::null_mut();
        // SAFETY: `raw` is a live local that krb5_init_context fills in.
        let code = unsafe { krb5_init_context(&mut raw) };
        match NonNull::new(raw) {
            Some(raw) if code == 0 => Ok(Context {
                raw,
                _not_send: PhantomData,
            }),
            // On failure MIT leaves no context behind; a NULL context is fine for
            // krb5_get_error_message (it falls back to the com_err tables).
            _ => Err(error(ptr::null_mut(), if code == 0 { -1 } else { code })),
        }
    }

    /// `krb5_parse_name`: `name[/instance]...[@REALM]`; without a realm, the
    /// configuration's `default_realm`.
    pub fn parse_name(&self, name: &CStr) -> Result<Principal<'_>, Krb5Error> {
        let mut raw: RawPrincipal = ptr::null_mut();
        // SAFETY: the context is live; `name` is NUL-terminated; `raw` is a live local.
        let code = unsafe { krb5_parse_name(self.raw.as_ptr(), name.as_ptr(), &mut raw) };
        self.principal(code, raw)
    }

    /// `krb5_sname_to_principal(hostname, service, KRB5_NT_SRV_HST)`: `service/host`,
    /// the host lower-cased (and canonicalised as krb5.conf says), the realm from
    /// `[domain_realm]`. `hostname` `None`: this host's name.
    pub fn host_service_principal(
        &self,
        hostname: Option<&CStr>,
        service: &CStr,
    ) -> Result<Principal<'_>, Krb5Error> {
        let mut raw: RawPrincipal = ptr::null_mut();
        let hostname = hostname.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: the context is live; `hostname` is NULL or NUL-terminated, `service`
        // NUL-terminated, both live for the call; `raw` is a live local.
        let code = unsafe {
            krb5_sname_to_principal(
                self.raw.as_ptr(),
                hostname,
                service.as_ptr(),
                NT_SRV_HST,
                &mut raw,
            )
        };
        self.principal(code, raw)
    }

    fn principal(&self, code: ErrorCode, raw: RawPrincipal) -> Result<Principal<'_>, Krb5Error> {
        match NonNull::new(raw) {
            Some(raw) if code == 0 => Ok(Principal { context: self, raw }),
            Some(raw) => {
                // SAFETY: a principal returned alongside an error is still ours to free.
                unsafe { krb5_free_principal(self.raw.as_ptr(), raw.as_ptr()) };
                Err(self.error(code))
            }
            None => Err(self.error(if code == 0 { -1 } else { code })),
        }
    }

    /// `krb5_get_init_creds_password` with default options and no prompter: an AS
    /// exchange with the client's KDC. Refuses a password with a NUL byte.
    pub fn get_init_creds_password(
        &self,
        client: &Principal<'_>,
        password: &Password,
    ) -> Result<Creds<'_>, Krb5Error> {
        if password.as_bytes().contains(&0) {
            return Err(Krb5Error {
                code: -1,
                message: "the password contains a NUL byte".into(),
            });
        }
        let password = password.to_c_bytes();
        let mut options: *mut c_void = ptr::null_mut();
        // SAFETY: the context is live; `options` is a live local that is filled in.
        let code = unsafe { krb5_get_init_creds_opt_alloc(self.raw.as_ptr(), &mut options) };
        if code != 0 || options.is_null() {
            return Err(self.error(if code == 0 { -1 } else { code }));
        }
        // SAFETY: an all-zero krb5_creds is the documented initial state (NULL pointers,
        // zero lengths); krb5_free_cred_contents accepts it as well as a filled one.
        let mut creds: Box<RawCreds> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the context and client are live; `password` is NUL-terminated and
        // outlives the call; no prompter (NULL function, NULL data), no start time, the
        // default TGS service (NULL); `options` came from the alloc call above; `creds`
        // is a writable krb5_creds.
        let code = unsafe {
            krb5_get_init_creds_password(
                self.raw.as_ptr(),
                &mut *creds,
                client.raw.as_ptr(),
                password.as_bytes().as_ptr().cast(),
                None,
                ptr::null_mut(),
                0,
                ptr::null(),
                options,
            )
        };
        // SAFETY: from krb5_get_init_creds_opt_alloc, freed once.
        unsafe { krb5_get_init_creds_opt_free(self.raw.as_ptr(), options) };
        let creds = Creds {
            context: self,
            raw: creds,
        };
        if code == 0 {
            Ok(creds)
        } else {
            Err(self.error(code))
        }
    }

    /// `krb5_kt_resolve(name)`: `FILE:/path`, `/path`, or another keytab type.
    pub fn keytab(&self, name: &CStr) -> Result<Keytab<'_>, Krb5Error> {
        let mut raw: RawKeytab = ptr::null_mut();
        // SAFETY: the context is live; `name` is NUL-terminated; `raw` is a live local.
        let code = unsafe { krb5_kt_resolve(self.raw.as_ptr(), name.as_ptr(), &mut raw) };
        match NonNull::new(raw) {
            Some(raw) if code == 0 => Ok(Keytab { context: self, raw }),
            _ => Err(self.error(if code == 0 { -1 } else { code })),
        }
    }

    /// `krb5_verify_init_creds` with `ap_req_nofail`: gets a ticket for `server` with
    /// `creds` and decrypts it with the key `keytab` (`None`: the default keytab) holds
    /// for `server`. Fails when there is no such key, so a KDC that does not know the
    /// server's key (a spoofed one) can't vouch for a password.
    pub fn verify_init_creds(
        &self,
        creds: &mut Creds<'_>,
        server: &Principal<'_>,
        keytab: Option<&Keytab<'_>>,
    ) -> Result<(), Krb5Error> {
        let mut options = VerifyOptions {
            flags: 0,
            ap_req_nofail: 0,
        };
        // SAFETY: `options` is a live krb5_verify_init_creds_opt.
        unsafe {
            krb5_verify_init_creds_opt_init(&mut options);
            krb5_verify_init_creds_opt_set_ap_req_nofail(&mut options, 1);
        }
        let keytab = keytab.map_or(ptr::null_mut(), |k| k.raw.as_ptr());
        // SAFETY: the context, creds and server are live and belong to this context;
        // `keytab` is NULL (the default keytab) or a live keytab of this context; a NULL
        // ccache pointer asks for no credential cache; `options` is initialised.
        let code = unsafe {
            krb5_verify_init_creds(
                self.raw.as_ptr(),
                &mut *creds.raw,
                server.raw.as_ptr(),
                keytab,
                ptr::null_mut(),
                &mut options,
            )
        };
        if code == 0 {
            Ok(())
        } else {
            Err(self.error(code))
        }
    }

    fn error(&self, code: ErrorCode) -> Krb5Error {
        error(self.raw.as_ptr(), code)
    }
}

/// libkrb5's text for `code` (the extended message of the context's last failure, when
/// there is one for this code).
fn error(context: RawContext, code: ErrorCode) -> Krb5Error {
    // SAFETY: `context` is NULL or live; the result is NULL or a string that must be
    // released with krb5_free_error_message.
    let text = unsafe { krb5_get_error_message(context, code) };
    // SAFETY: NULL or NUL-terminated, alive until freed below: copied before.
    let message = unsafe { super::message(text) };
    if !text.is_null() {
        // SAFETY: from krb5_get_error_message on the same context, freed once.
        unsafe { krb5_free_error_message(context, text) };
    }
    let message = message.unwrap_or_else(|| format!("Kerberos error {code}"));
    Krb5Error { code, message }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: from a successful krb5_init_context; everything borrowed from it has
        // been dropped already (the borrows end before the context does).
        unsafe { krb5_free_context(self.raw.as_ptr()) };
    }
}

impl Drop for Principal<'_> {
    fn drop(&mut self) {
        // SAFETY: a principal of this (still live) context, freed once.
        unsafe { krb5_free_principal(self.context.raw.as_ptr(), self.raw.as_ptr()) };
    }
}

impl Drop for Creds<'_> {
    fn drop(&mut self) {
        // SAFETY: zeroed or filled by libkrb5 in this (still live) context; the contents
        // are freed (the session key zeroed) once, the Box itself by Rust.
        unsafe { krb5_free_cred_contents(self.context.raw.as_ptr(), &mut *self.raw) };
    }
}

impl Drop for Keytab<'_> {
    fn drop(&mut self) {
        // SAFETY: from krb5_kt_resolve in this (still live) context, closed once.
        unsafe { krb5_kt_close(self.context.raw.as_ptr(), self.raw.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_mit_1_20() {
        // sizeof/offsetof from <krb5/krb5.h> (MIT 1.20.1, x86_64).
        assert_eq!(std::mem::size_of::<RawCreds>(), 120);
        assert_eq!(std::mem::align_of::<RawCreds>(), 8);
        assert_eq!(std::mem::offset_of!(RawCreds, keyblock), 24);
        assert_eq!(std::mem::offset_of!(RawCreds, times), 48);
        assert_eq!(std::mem::offset_of!(RawCreds, addresses), 72);
        assert_eq!(std::mem::offset_of!(RawCreds, authdata), 112);
        assert_eq!(std::mem::size_of::<VerifyOptions>(), 8);
    }

    #[test]
    fn parse_errors_carry_libkrb5_text() {
        let context = Context::new().expect("context");
        // A trailing backslash escapes nothing: a malformed name.
        let error = context.parse_name(c"user\\").err().expect("refused");
        assert_ne!(error.code, 0);
        assert!(!error.message.is_empty());
        assert!(context.parse_name(c"user@R@R").is_err());
        assert!(context.parse_name(c"user/instance@EXAMPLE.TEST").is_ok());
    }

    #[test]
    fn unknown_keytab_types_are_refused() {
        let context = Context::new().expect("context");
        assert!(context.keytab(c"NOSUCHTYPE:/x").is_err());
        assert!(context.keytab(c"FILE:/nonexistent/keytab").is_ok());
    }

    #[test]
    fn nul_in_password_is_refused_before_libkrb5() {
        let context = Context::new().expect("context");
        let client = context.parse_name(c"user@EXAMPLE.TEST").unwrap();
        let error = context
            .get_init_creds_password(&client, &Password::new(b"a\0b".to_vec()))
            .err()
            .expect("refused");
        assert_eq!(error.code, -1);
    }
}
