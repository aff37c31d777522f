//! Linux-PAM through the pre-generated `pam-sys` 0.5 bindings: one PAM transaction as an
//! owning value whose drop calls `pam_end`, and the conversation callback.
//!
//! A [`Transaction`] is neither `Send` nor `Sync`: PAM is safe with one handle per thread,
//! so a handle is created, used and ended on the thread that verifies one request.
//!
//! The conversation is never interactive. Every echo-off prompt is answered with the
//! password and every echo-on prompt with the login; error and info messages get no answer
//! (they are logged at debug level, escaped); any other style is a conversation error. The
//! answers are copies in `malloc`ed memory because PAM releases them with `free()`; Linux-PAM
//! overwrites a password answer before freeing it, and we wipe every copy we free ourselves.
//! A panic in the callback never crosses into C: it becomes `PAM_CONV_ERR`.
//!
//! Fail delays are not slept here: every transaction sets the `PAM_FAIL_DELAY` item to a
//! callback that only records the delay libpam computed for a failed `pam_authenticate`
//! (pam_unix asks for 2 s, pam_faildelay for more; libpam randomises it to 50–150 %).
//! The caller reads it with [`Transaction::fail_delay`] and waits it without holding a
//! thread.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};
use std::time::Duration;

use pam_sys::raw;
use pam_sys::{PamConversation, PamFlag, PamHandle, PamItemType, PamMessage, PamResponse};
use pam_sys::{PamMessageStyle, PamReturnCode};
use zeroize::Zeroize;

use crate::log::sanitize;
use crate::log_debug;
use crate::secret::Password;

const SUCCESS: c_int = PamReturnCode::SUCCESS as c_int;
const BUF_ERR: c_int = PamReturnCode::BUF_ERR as c_int;
const CONV_ERR: c_int = PamReturnCode::CONV_ERR as c_int;
const SYSTEM_ERR: c_int = PamReturnCode::SYSTEM_ERR as c_int;

const PROMPT_ECHO_OFF: c_int = PamMessageStyle::PROMPT_ECHO_OFF as c_int;
const PROMPT_ECHO_ON: c_int = PamMessageStyle::PROMPT_ECHO_ON as c_int;
const ERROR_MSG: c_int = PamMessageStyle::ERROR_MSG as c_int;
const TEXT_INFO: c_int = PamMessageStyle::TEXT_INFO as c_int;

/// Linux-PAM's `PAM_MAX_NUM_MSG`: no module sends more messages in one call.
const MAX_NUM_MSG: c_int = 32;

/// A failed PAM call: its return code and PAM's text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamError {
    pub code: c_int,
    pub message: String,
}

impl fmt::Display for PamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PamError {}

/// Flags for `pam_authenticate` and `pam_acct_mgmt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(c_int);

impl Flags {
    pub const NONE: Flags = Flags(PamFlag::NONE as c_int);
    /// `PAM_SILENT`: modules should not send messages (many still do).
    pub const SILENT: Flags = Flags(PamFlag::SILENT as c_int);
}

/// What the conversation answers with (both NUL-terminated; the password wipes itself),
/// and the fail delay libpam handed to [`record_fail_delay`]: the `appdata_ptr` PAM gives
/// both callbacks points here.
struct Answers {
    login: Vec<u8>,
    password: Password,
    /// Microseconds; the longest delay of a failed call so far.
    fail_delay: Cell<c_uint>,
}

/// The `pam_conv` structure and the answers its `appdata_ptr` points to, in one heap
/// allocation whose address stays fixed until `pam_end` has returned.
struct Conversation {
    conv: PamConversation,
    answers: Answers,
}

/// One PAM transaction (`pam_start` … `pam_end`).
pub struct Transaction {
    handle: NonNull<PamHandle>,
    /// From `Box::into_raw`; freed in `drop`, after `pam_end`.
    conversation: NonNull<Conversation>,
    /// The last return code, handed to `pam_end` for the modules' cleanup.
    status: c_int,
}

impl Transaction {
    /// `pam_start(service, user, conv)`. The conversation answers echo-off prompts with
    /// `password` and echo-on prompts with `user`.
    pub fn start(service: &CStr, user: &CStr, password: &Password) -> Result<Self, PamError> {
        if password.as_bytes().contains(&0) {
            return Err(PamError {
                code: SYSTEM_ERR,
                message: "the password contains a NUL byte".into(),
            });
        }
        let conversation = Box::into_raw(Box::new(Conversation {
            conv: PamConversation {
                conv: Some(converse),
                data_ptr: ptr::null_mut(),
            },
            answers: Answers {
                login: user.to_bytes_with_nul().to_vec(),
                password: password.to_c_bytes(),
                fail_delay: Cell::new(0),
            },
        }));
        // SAFETY: `conversation` comes from `Box::into_raw`, so it is valid and unaliased.
        // The answers live in the same allocation, which stays put until `drop`.
        unsafe {
            (*conversation).conv.data_ptr = (&raw mut (*conversation).answers).cast();
        }
        let mut handle: *const PamHandle = ptr::null();
        // SAFETY: `service` and `user` are NUL-terminated and outlive the call (PAM copies
        // them); the `pam_conv` structure is valid (PAM copies it too) and its
        // `appdata_ptr` stays valid until `pam_end`; `handle` is a live local.
        let rc = unsafe {
            raw::pam_start(
                service.as_ptr(),
                user.as_ptr(),
                &raw const (*conversation).conv,
                &mut handle,
            )
        };
        match NonNull::new(handle.cast_mut()) {
            Some(handle) if rc == SUCCESS => {
                let mut transaction = Transaction {
                    handle,
                    // SAFETY: from `Box::into_raw`, never null.
                    conversation: unsafe { NonNull::new_unchecked(conversation) },
                    status: SUCCESS,
                };
                // Dropping the transaction on an error ends it and frees the conversation.
                transaction.take_over_fail_delays()?;
                Ok(transaction)
            }
            _ => {
                // Linux-PAM frees the handle and sets it to NULL when pam_start fails, so
                // there is nothing to end; no callback can run any more.
                // SAFETY: from `Box::into_raw` above and not freed yet; PAM kept no pointer
                // into it that can still be used.
                drop(unsafe { Box::from_raw(conversation) });
                let code = if rc == SUCCESS { SYSTEM_ERR } else { rc };
                Err(error(ptr::null_mut(), code))
            }
        }
    }

    /// Sets `PAM_FAIL_DELAY` to [`record_fail_delay`], so libpam never sleeps.
    fn take_over_fail_delays(&mut self) -> Result<(), PamError> {
        let callback: extern "C" fn(c_int, c_uint, *mut c_void) = record_fail_delay;
        // SAFETY: the handle is live; for PAM_FAIL_DELAY the item is the callback itself
        // (Linux-PAM stores the pointer and calls it as `void (*)(int, unsigned, void *)`,
        // the signature above), valid for the whole process lifetime.
        let rc = unsafe {
            raw::pam_set_item(
                self.handle.as_ptr(),
                PamItemType::FAIL_DELAY as c_int,
                callback as *const c_void,
            )
        };
        self.check(rc)
    }

    /// The fail delay libpam asked for on the last failed `pam_authenticate` (zero after
    /// a success or when no module asked for one). Not slept: the caller waits it.
    pub fn fail_delay(&self) -> Duration {
        // SAFETY: the conversation (and the answers in it) lives until `drop`; the cell is
        // only touched on this thread (`Transaction` is not `Send`).
        let micros = unsafe { self.conversation.as_ref() }
            .answers
            .fail_delay
            .get();
        Duration::from_micros(u64::from(micros))
    }

    /// Sets `PAM_RHOST`, the remote host modules such as pam_access see.
    pub fn set_rhost(&mut self, rhost: &CStr) -> Result<(), PamError> {
        // SAFETY: the handle is live (owned by `self`); `rhost` is NUL-terminated and PAM
        // copies it before returning.
        let rc = unsafe {
            raw::pam_set_item(
                self.handle.as_ptr(),
                PamItemType::RHOST as c_int,
                rhost.as_ptr().cast(),
            )
        };
        self.check(rc)
    }

    /// `pam_authenticate`: runs the service's auth stack.
    pub fn authenticate(&mut self, flags: Flags) -> Result<(), PamError> {
        // SAFETY: the handle is live and used by this thread only (`Transaction` is not
        // `Send`); the conversation it calls back into is alive until `drop`.
        let rc = unsafe { raw::pam_authenticate(self.handle.as_ptr(), flags.0) };
        self.check(rc)
    }

    /// `pam_acct_mgmt`: runs the service's account stack (expiry, access rules).
    pub fn acct_mgmt(&mut self, flags: Flags) -> Result<(), PamError> {
        // SAFETY: as in `authenticate`.
        let rc = unsafe { raw::pam_acct_mgmt(self.handle.as_ptr(), flags.0) };
        self.check(rc)
    }

    /// The current `PAM_USER` item (a module may have changed it).
    pub fn user(&self) -> Result<Option<Vec<u8>>, PamError> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: the handle is live; `item` is a live local that PAM fills in.
        let rc = unsafe {
            raw::pam_get_item(self.handle.as_ptr(), PamItemType::USER as c_int, &mut item)
        };
        if rc != SUCCESS {
            return Err(error(self.handle.as_ptr(), rc));
        }
        if item.is_null() {
            return Ok(None);
        }
        // SAFETY: PAM_USER is a NUL-terminated string owned by the handle, unchanged until
        // the next PAM call on it; it is copied right here.
        let user = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        Ok(Some(user.to_bytes().to_vec()))
    }

    fn check(&mut self, rc: c_int) -> Result<(), PamError> {
        self.status = rc;
        if rc == SUCCESS {
            Ok(())
        } else {
            Err(error(self.handle.as_ptr(), rc))
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful pam_start and is ended exactly once,
        // here; nothing else holds it.
        unsafe { raw::pam_end(self.handle.as_ptr(), self.status) };
        // SAFETY: from `Box::into_raw` in `start`; after pam_end PAM no longer calls the
        // conversation, so this is the last use. Dropping it wipes the password copy.
        drop(unsafe { Box::from_raw(self.conversation.as_ptr()) });
    }
}

/// PAM's text for `code` (English: the daemon never calls setlocale).
fn error(handle: *mut PamHandle, code: c_int) -> PamError {
    // SAFETY: Linux-PAM's pam_strerror does not use the handle (NULL is fine) and returns a
    // static string.
    let text = unsafe { raw::pam_strerror(handle, code) };
    // SAFETY: NULL or a static NUL-terminated string.
    let message = unsafe { super::message(text) }.unwrap_or_else(|| format!("PAM error {code}"));
    PamError { code, message }
}

/// The `PAM_FAIL_DELAY` callback: libpam calls it at the end of `pam_authenticate` with
/// the call's status and the delay it computed (zero when no module asked for one), and
/// the conversation's `appdata_ptr`. Records the delay of a failure; never sleeps, never
/// unwinds into C.
extern "C" fn record_fail_delay(status: c_int, delay: c_uint, appdata_ptr: *mut c_void) {
    if status == SUCCESS || appdata_ptr.is_null() {
        return;
    }
    // SAFETY: `appdata_ptr` is the `Answers` registered with the conversation in
    // `Transaction::start`, alive until `pam_end` returns; libpam calls this on the
    // thread that runs the transaction, inside `pam_authenticate`. `Cell` is written
    // through a shared reference only.
    let answers = unsafe { &*appdata_ptr.cast::<Answers>() };
    answers.fail_delay.set(answers.fail_delay.get().max(delay));
}

/// The conversation function PAM calls. Never unwinds into C.
extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: PAM calls this with the `pam_conv` we registered, so `appdata_ptr` is our
        // `Answers` (or NULL, refused inside), `msg` holds `num_msg` message pointers
        // (Linux-PAM's layout) and `resp` is where the answers go.
        unsafe { answer(num_msg, msg, resp, appdata_ptr.cast::<Answers>()) }
    }))
    .unwrap_or(CONV_ERR)
}

/// The body of [`converse`].
///
/// # Safety
/// `answers` is NULL or points to live `Answers`; `msg` is NULL or points to `num_msg`
/// pointers, each NULL or pointing to a `pam_message` whose `msg` is NULL or a
/// NUL-terminated string; `resp` is NULL or writable.
unsafe fn answer(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    resp: *mut *mut PamResponse,
    answers: *const Answers,
) -> c_int {
    if resp.is_null() {
        return CONV_ERR;
    }
    // SAFETY: `resp` is writable (caller).
    unsafe { *resp = ptr::null_mut() };
    if msg.is_null() || answers.is_null() || !(1..=MAX_NUM_MSG).contains(&num_msg) {
        return CONV_ERR;
    }
    // SAFETY: non-NULL and live for this call (caller).
    let answers = unsafe { &*answers };
    let count = num_msg as usize;
    let Some(mut responses) = Responses::new(count) else {
        return BUF_ERR;
    };
    for i in 0..count {
        // SAFETY: `msg` holds `count` pointers (caller).
        let message = unsafe { *msg.add(i) };
        if message.is_null() {
            return CONV_ERR;
        }
        // SAFETY: non-NULL message pointers point to a `pam_message` (caller).
        let PamMessage { msg_style, msg } = unsafe { *message };
        let text = if msg.is_null() {
            &[][..]
        } else {
            // SAFETY: a non-NULL `msg` is a NUL-terminated string (caller).
            unsafe { CStr::from_ptr(msg) }.to_bytes()
        };
        #[cfg(test)]
        if text == tests::PANIC_TEXT {
            panic!("test: panic inside the conversation");
        }
        match msg_style {
            PROMPT_ECHO_OFF => {
                log_debug!(
                    "PAM conversation: answering the prompt \"{}\" with the password",
                    sanitize(text)
                );
                if !responses.set(i, answers.password.as_bytes()) {
                    return BUF_ERR;
                }
            }
            PROMPT_ECHO_ON => {
                log_debug!(
                    "PAM conversation: answering the prompt \"{}\" with the login",
                    sanitize(text)
                );
                if !responses.set(i, &answers.login) {
                    return BUF_ERR;
                }
            }
            ERROR_MSG => log_debug!("PAM conversation: error message: {}", sanitize(text)),
            TEXT_INFO => log_debug!("PAM conversation: info message: {}", sanitize(text)),
            other => {
                log_debug!("PAM conversation: message style {other} is not supported");
                return CONV_ERR;
            }
        }
    }
    // SAFETY: `resp` is writable (caller); PAM now owns the array and frees it.
    unsafe { *resp = responses.into_raw() };
    SUCCESS
}

/// A `calloc`ed array of `pam_response` under construction. Until handed to PAM, dropping
/// it wipes and frees every answer and the array (on an error or a panic).
struct Responses {
    array: NonNull<PamResponse>,
    len: usize,
}

impl Responses {
    fn new(len: usize) -> Option<Responses> {
        // SAFETY: calloc with a non-zero count and element size; NULL is handled. An
        // all-zero `pam_response` is valid (NULL answer, retcode 0).
        let array = unsafe { libc::calloc(len, size_of::<PamResponse>()) };
        NonNull::new(array.cast::<PamResponse>()).map(|array| Responses { array, len })
    }

    /// Stores a `malloc`ed copy of `answer` (NUL-terminated) as answer `i`. False when out
    /// of memory.
    fn set(&mut self, i: usize, answer: &[u8]) -> bool {
        assert!(i < self.len && answer.last() == Some(&0));
        // SAFETY: plain allocation; NULL is handled.
        let copy = unsafe { libc::malloc(answer.len()) }.cast::<u8>();
        if copy.is_null() {
            return false;
        }
        // SAFETY: `copy` has `answer.len()` writable bytes and does not overlap `answer`;
        // `i < len`, so the slot is inside the array.
        unsafe {
            ptr::copy_nonoverlapping(answer.as_ptr(), copy, answer.len());
            let slot = self.array.as_ptr().add(i);
            wipe_and_free((*slot).resp);
            (*slot).resp = copy.cast::<c_char>();
        }
        true
    }

    fn into_raw(self) -> *mut PamResponse {
        let array = self.array.as_ptr();
        std::mem::forget(self);
        array
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        for i in 0..self.len {
            // SAFETY: `i < len`; every non-NULL answer was malloc'ed by `set`.
            unsafe { wipe_and_free((*self.array.as_ptr().add(i)).resp) };
        }
        // SAFETY: calloc'ed in `new`, not handed to PAM (else `into_raw` forgot `self`).
        unsafe { libc::free(self.array.as_ptr().cast()) };
    }
}

/// Overwrites a NUL-terminated heap string, then frees it. NULL is ignored.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string from `malloc` that nothing else uses.
unsafe fn wipe_and_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    // SAFETY: `s` is a live NUL-terminated heap string (caller), `strlen` bytes long.
    unsafe {
        std::slice::from_raw_parts_mut(s.cast::<u8>(), libc::strlen(s)).zeroize();
        libc::free(s.cast());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// Calls the conversation with `(style, text)` messages; returns its code and the
    /// answers (freed here).
    fn converse_with(messages: &[(c_int, &str)]) -> (c_int, Vec<Option<Vec<u8>>>) {
        let answers = Answers {
            login: b"alice\0".to_vec(),
            password: Password::new(b"s3cret pw\0".to_vec()),
            fail_delay: Cell::new(0),
        };
        let texts: Vec<CString> = messages
            .iter()
            .map(|(_, t)| CString::new(*t).unwrap())
            .collect();
        let mut structs: Vec<PamMessage> = messages
            .iter()
            .zip(&texts)
            .map(|((style, _), text)| PamMessage {
                msg_style: *style,
                msg: text.as_ptr(),
            })
            .collect();
        let mut pointers: Vec<*mut PamMessage> =
            structs.iter_mut().map(|m| m as *mut PamMessage).collect();
        let mut resp: *mut PamResponse = ptr::null_mut();
        let rc = converse(
            messages.len() as c_int,
            pointers.as_mut_ptr(),
            &mut resp,
            (&raw const answers).cast_mut().cast(),
        );
        let mut out = Vec::new();
        if !resp.is_null() {
            for i in 0..messages.len() {
                // SAFETY: on success the array has one entry per message.
                let r = unsafe { *resp.add(i) };
                if r.resp.is_null() {
                    out.push(None);
                } else {
                    // SAFETY: answers are NUL-terminated malloc'ed strings we now own.
                    out.push(Some(unsafe { CStr::from_ptr(r.resp) }.to_bytes().to_vec()));
                    unsafe { wipe_and_free(r.resp) };
                }
            }
            // SAFETY: the calloc'ed array, now ours.
            unsafe { libc::free(resp.cast()) };
        }
        (rc, out)
    }

    #[test]
    fn prompts_get_the_password_or_the_login() {
        let (rc, out) = converse_with(&[
            (PROMPT_ECHO_OFF, "Password: "),
            (PROMPT_ECHO_ON, "login: "),
            (PROMPT_ECHO_OFF, "One-time code: "),
        ]);
        assert_eq!(rc, SUCCESS);
        assert_eq!(
            out,
            vec![
                Some(b"s3cret pw".to_vec()),
                Some(b"alice".to_vec()),
                Some(b"s3cret pw".to_vec())
            ]
        );
    }

    #[test]
    fn messages_get_no_answer() {
        let (rc, out) = converse_with(&[
            (TEXT_INFO, "Welcome"),
            (ERROR_MSG, "Something\nodd"),
            (PROMPT_ECHO_OFF, "Password: "),
        ]);
        assert_eq!(rc, SUCCESS);
        assert_eq!(out, vec![None, None, Some(b"s3cret pw".to_vec())]);
    }

    #[test]
    fn other_styles_are_a_conversation_error() {
        // PAM_RADIO_TYPE (5) and PAM_BINARY_PROMPT (7), after an answered prompt: nothing
        // is handed back (the answer already made is wiped and freed).
        for style in [5, 7, 0, -1] {
            let (rc, out) = converse_with(&[(PROMPT_ECHO_OFF, "Password: "), (style, "x")]);
            assert_eq!(rc, CONV_ERR, "style {style}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        let (rc, _) = converse_with(&[]);
        assert_eq!(rc, CONV_ERR);
        let many = vec![(TEXT_INFO, "x"); 33];
        let (rc, out) = converse_with(&many);
        assert_eq!((rc, out.len()), (CONV_ERR, 0));
        let full = vec![(TEXT_INFO, "x"); 32];
        assert_eq!(converse_with(&full).0, SUCCESS);
        // NULL response pointer, NULL messages, NULL appdata.
        assert_eq!(
            converse(1, ptr::null_mut(), ptr::null_mut(), ptr::null_mut()),
            CONV_ERR
        );
        let mut resp: *mut PamResponse = ptr::null_mut();
        assert_eq!(
            converse(1, ptr::null_mut(), &mut resp, ptr::null_mut()),
            CONV_ERR
        );
        assert!(resp.is_null());
        let mut null_message: *mut PamMessage = ptr::null_mut();
        let answers = Answers {
            login: b"a\0".to_vec(),
            password: Password::new(b"p\0".to_vec()),
            fail_delay: Cell::new(0),
        };
        assert_eq!(
            converse(
                1,
                &mut null_message,
                &mut resp,
                (&raw const answers).cast_mut().cast()
            ),
            CONV_ERR
        );
        assert!(resp.is_null());
    }

    #[test]
    fn a_null_message_text_is_fine() {
        let answers = Answers {
            login: b"a\0".to_vec(),
            password: Password::new(b"p\0".to_vec()),
            fail_delay: Cell::new(0),
        };
        let mut message = PamMessage {
            msg_style: TEXT_INFO,
            msg: ptr::null(),
        };
        let mut pointer: *mut PamMessage = &mut message;
        let mut resp: *mut PamResponse = ptr::null_mut();
        let rc = converse(
            1,
            &mut pointer,
            &mut resp,
            (&raw const answers).cast_mut().cast(),
        );
        assert_eq!(rc, SUCCESS);
        assert!(!resp.is_null());
        // SAFETY: one calloc'ed entry with a NULL answer.
        unsafe {
            assert!((*resp).resp.is_null());
            libc::free(resp.cast());
        }
    }

    /// A message text that makes the conversation panic (test builds only).
    pub(super) const PANIC_TEXT: &[u8] = b"test: panic here";

    #[test]
    fn a_panic_never_crosses_into_c() {
        // Without catch_unwind this would abort the test process.
        let panic_text = std::str::from_utf8(PANIC_TEXT).unwrap();
        let (rc, out) = converse_with(&[(PROMPT_ECHO_OFF, "Password: "), (TEXT_INFO, panic_text)]);
        assert_eq!(rc, CONV_ERR);
        assert!(out.is_empty());
    }

    #[test]
    fn the_fail_delay_callback_keeps_the_longest_delay_of_a_failure() {
        let answers = Answers {
            login: b"a\0".to_vec(),
            password: Password::new(b"p\0".to_vec()),
            fail_delay: Cell::new(0),
        };
        let appdata = (&raw const answers).cast_mut().cast();
        record_fail_delay(SUCCESS, 2_000_000, appdata);
        assert_eq!(answers.fail_delay.get(), 0, "a success asks for no delay");
        record_fail_delay(7, 1_500_000, appdata);
        record_fail_delay(7, 900_000, appdata);
        assert_eq!(answers.fail_delay.get(), 1_500_000);
        record_fail_delay(7, 0, ptr::null_mut());
    }

    #[test]
    fn strerror_texts() {
        assert_eq!(error(ptr::null_mut(), 7).message, "Authentication failure");
        assert_eq!(error(ptr::null_mut(), 7).code, 7);
    }

    #[test]
    fn nul_in_password_is_refused_before_pam_start() {
        let service = CString::new("sasl-rs-unit-nonexistent").unwrap();
        let user = CString::new("alice").unwrap();
        let err = Transaction::start(&service, &user, &Password::new(b"a\0b".to_vec()))
            .err()
            .expect("refused");
        assert_eq!(err.code, SYSTEM_ERR);
    }
}
