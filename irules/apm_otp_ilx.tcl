# otp-sidecar: text the APM one-time password through Twilio, via the ILX forwarder.
#
# Attach to the APM virtual server (from the ILX plugin: otp_sidecar_plugin/apm_otp_ilx).
# In the access policy, after "OTP Generate", add an "iRule Event" agent whose ID is the agent
# id below, then branch on:
#     expr { [mcget {session.custom.twilio.status}] starts_with "SM" }
# The status holds the Twilio message SID on success, or an "ERR <reason>: ..." string.
# When the daemon may place voice calls (channel "voice", or voice_fallback), a call's SID
# starts with "CA": branch on
#     expr { [mcget {session.custom.twilio.status}] starts_with "SM" ||
#            [mcget {session.custom.twilio.status}] starts_with "CA" }
#
# Verify mode (the daemon runs with verify_service_sid): the status holds the verification
# SID, so branch on  expr { [mcget {session.custom.twilio.status}] starts_with "VE" }
# and add a second "iRule Event" agent, with the confirm agent id below, on the success
# branch of "OTP Verify": it tells Twilio the user entered the right code (Fraud Guard learns
# from it) and stores the daemon's reply in session.custom.twilio.confirm. That reply never
# changes the policy's outcome: the user has already passed.
#
# Tcl 8.4 only (iRules): no dict, {*}, lassign, lrepeat, lreverse, apply, chan, try.

when RULE_INIT {
    # ---- settings ----
    set static::otp_ilx_agent_id   "twilio"
    set static::otp_ilx_plugin     "otp_sidecar_plugin"
    set static::otp_ilx_extension  "otp_sidecar_forwarder"
    # The session variable that holds the user's mobile number (E.164).
    set static::otp_ilx_phone_var  "session.ad.last.attr.mobile"
    # E.164 number, alphanumeric sender ID, or Messaging Service SID (MG...).
    set static::otp_ilx_sender     "+14155550100"
    # ILX::call's own limit; the forwarder answers before it.
    set static::otp_ilx_timeout_ms 3000
    # The session variable with the user's language, passed on as the context's locale
    # ("" leaves it out). Check the name on your version.
    set static::otp_ilx_locale_var "session.ui.lang"
    # A session variable holding "sms" or "voice" (say, from a logon page choice), passed on
    # as the context's channel ("" leaves it out: the daemon's configured channel).
    set static::otp_ilx_channel_var ""
    # Verify mode only: the agent id after a successful "OTP Verify" ("" for none).
    set static::otp_ilx_confirm_agent_id "twilio_confirm"
    # The caller token the daemon's caller_tokens_file gives this BIG-IP, passed to the
    # forwarder, which sends it as the context's token ("" passes none: the forwarder's own
    # setting, if any, applies). A secret: never logged by this rule.
    set static::otp_ilx_token ""
}

# ---- the phone in a log line ----
# The daemon's masking rule (src/mask/mod.rs, README "Logs"): the calling code, a star for
# each hidden digit of the national number, then its last min(4, floor(N/2)) digits (N: the
# national number's digit count): +14155550100 -> +1******0100, +12345678 -> +1****678. The
# calling code's length follows the ITU's E.164 assignments: 1 and 7 have one digit, the codes
# listed below two, every other code three. A number as a directory writes it loses its
# separators first; one without a leading + shows no calling code; anything else is "****".
proc otp_mask { phone } {
    set phone [string trim $phone]
    if { ![regexp {^\+?[0-9 ()./-]+$} $phone] } {
        return "****"
    }
    regsub -all {[^0-9]} $phone "" digits
    set len [string length $digits]
    if { $len == 0 } {
        return "****"
    }
    set code 0
    if { [string index $phone 0] eq "+" } {
        set two " 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 "
        set first [string index $digits 0]
        if { $first eq "1" || $first eq "7" } {
            set code 1
        } elseif { [string first " [string range $digits 0 1] " $two] >= 0 } {
            set code 2
        } else {
            set code 3
        }
        if { $code > $len } {
            set code $len
        }
    }
    set national [expr {$len - $code}]
    set shown [expr {$national / 2}]
    if { $shown > 4 } {
        set shown 4
    }
    set masked ""
    if { $code > 0 } {
        set masked "+[string range $digits 0 [expr {$code - 1}]]"
    }
    append masked [string repeat "*" [expr {$national - $shown}]]
    append masked [string range $digits [expr {$len - $shown}] end]
    return $masked
}

# ---- UTF-8 ----
# ILX::call hands the iRule's strings to Node as characters (the forwarder encodes them as
# UTF-8). TMM may hand over a session value that already holds UTF-8 bytes, one per character
# (an e-acute as the two characters \xc3\xa9): passed on like that, it would be encoded twice.
# A value whose characters are all below 0x100 and form valid UTF-8 is therefore decoded into
# the characters it spells first. (A real Latin-1 name that happens to spell valid UTF-8 would
# be decoded too; none is known to occur.) iRules disable `encoding`, so this is done by hand.

# Whether every character of s is below 0x100 and the whole forms valid UTF-8 (the same rules
# as the daemon's: no overlong forms, no surrogates, nothing above U+10FFFF).
proc utf8_bytes_valid { s } {
    return [regexp {^(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf][\x80-\xbf]|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf][\x80-\xbf]|[\xf1-\xf3][\x80-\xbf][\x80-\xbf][\x80-\xbf]|\xf4[\x80-\x8f][\x80-\xbf][\x80-\xbf])*$} $s]
}

# The characters of the UTF-8 bytes b; b as it is when it is not valid UTF-8. A 4-byte
# sequence becomes a surrogate pair, as a UCS-2 string holds it.
proc utf8_decode { b } {
    if { ![regexp {[^\x00-\x7f]} $b] || ![call utf8_bytes_valid $b] } {
        return $b
    }
    binary scan $b c* bytes
    set s ""
    set cp 0
    set left 0
    foreach byte $bytes {
        set byte [expr {$byte & 0xff}]
        if { $left > 0 } {
            set cp [expr {($cp << 6) | ($byte & 0x3f)}]
            incr left -1
        } elseif { $byte < 0x80 } {
            set cp $byte
        } elseif { $byte < 0xe0 } {
            set cp [expr {$byte & 0x1f}]
            set left 1
        } elseif { $byte < 0xf0 } {
            set cp [expr {$byte & 0x0f}]
            set left 2
        } else {
            set cp [expr {$byte & 0x07}]
            set left 3
        }
        if { $left == 0 } {
            if { $cp < 0x10000 } {
                append s [format %c $cp]
            } else {
                set cp [expr {$cp - 0x10000}]
                append s [format %c%c [expr {0xd800 | ($cp >> 10)}] [expr {0xdc00 | ($cp & 0x3ff)}]]
            }
        }
    }
    return $s
}

when ACCESS_POLICY_AGENT_EVENT {
    set agent [ACCESS::policy agent_id]
    if { $agent ne "" && $agent eq $static::otp_ilx_confirm_agent_id } {
        # In every mode: the VE... SID sendOTP stored names the verification; otherwise
        # (Messages mode: an SM... status) the phone does, and the daemon answers its SM... SID.
        set target [ACCESS::session data get "session.custom.twilio.status"]
        if { ![regexp {^VE[0-9a-fA-F]{32}$} $target] } {
            set target [ACCESS::session data get $static::otp_ilx_phone_var]
        }
        set reply ""
        if { [catch {
            set handle [ILX::init $static::otp_ilx_plugin $static::otp_ilx_extension]
            if { $static::otp_ilx_token ne "" } {
                set reply [ILX::call $handle -timeout $static::otp_ilx_timeout_ms confirmOTP \
                    $target $static::otp_ilx_token]
            } else {
                set reply [ILX::call $handle -timeout $static::otp_ilx_timeout_ms confirmOTP $target]
            }
        } err] } {
            set reply "ERR unavailable: ILX call failed: $err"
        }
        ACCESS::session data set "session.custom.twilio.confirm" $reply
        if { [regexp {^(VE|SM|CA)[0-9a-fA-F]{32}$} $reply] } {
            log local0.info "otp-sidecar: confirmed $reply"
        } else {
            log local0.warn "otp-sidecar: confirm failed: $reply"
        }
        return
    }
    if { $agent ne $static::otp_ilx_agent_id } {
        return
    }
    set otp [ACCESS::session data get "session.otp.assigned.val"]
    set user [ACCESS::session data get "session.logon.last.username"]
    set phone [ACCESS::session data get $static::otp_ilx_phone_var]
    set sender $static::otp_ilx_sender

    # Never log the OTP; log the phone masked.
    set masked [call otp_mask $phone]

    set missing ""
    if { $otp eq "" } {
        set missing "OTP (session.otp.assigned.val)"
    } elseif { $phone eq "" } {
        set missing "phone number ($static::otp_ilx_phone_var)"
    } elseif { $sender eq "" } {
        set missing "sender (static::otp_ilx_sender)"
    }
    if { $missing ne "" } {
        log local0.warn "otp-sidecar: user '$user': no $missing; OTP not sent"
        ACCESS::session data set "session.custom.twilio.status" "ERR bad_request: no $missing"
        return
    }

    # Who is asking, for the daemon's rate limits: the end user's address and name; the
    # language and channel. The forwarder turns these four into sendOTP's context map.
    set ip ""
    catch { set ip [IP::client_addr] }
    set locale ""
    if { $static::otp_ilx_locale_var ne "" } {
        set locale [ACCESS::session data get $static::otp_ilx_locale_var]
    }
    set channel ""
    if { $static::otp_ilx_channel_var ne "" } {
        set channel [ACCESS::session data get $static::otp_ilx_channel_var]
    }
    set user [call utf8_decode $user]
    set locale [call utf8_decode $locale]
    set channel [call utf8_decode $channel]
    set status ""
    if { [catch {
        set handle [ILX::init $static::otp_ilx_plugin $static::otp_ilx_extension]
        # The token, when set, is an eighth argument: the forwarder puts it in the context.
        if { $static::otp_ilx_token ne "" } {
            set status [ILX::call $handle -timeout $static::otp_ilx_timeout_ms sendOTP \
                $otp $phone $sender $ip $user $locale $channel $static::otp_ilx_token]
        } else {
            set status [ILX::call $handle -timeout $static::otp_ilx_timeout_ms sendOTP \
                $otp $phone $sender $ip $user $locale $channel]
        }
    } err] } {
        set status "ERR unavailable: ILX call failed: $err"
    }
    # Only a real SID may open the success branch; anything unexpected becomes an ERR.
    if { ![regexp {^(SM|VE|CA)[0-9a-fA-F]{32}$} $status] && ![string match "ERR *" $status] } {
        set status "ERR internal: unexpected reply from the ILX extension"
    }
    ACCESS::session data set "session.custom.twilio.status" $status
    if { ![string match "ERR *" $status] } {
        log local0.info "otp-sidecar: user '$user' phone $masked: sent $status"
    } else {
        log local0.warn "otp-sidecar: user '$user' phone $masked: $status"
    }
    unset otp
}
