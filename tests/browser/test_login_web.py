"""The reference login web app in a real browser, against the real Tollgate server.

The tests run in order and share the accounts they make (pytest runs a file top to bottom):
alice signs up with an organization and an authenticator app, turns on mandatory 2FA for
bob, bob is locked out by wrong codes, dave uses passkeys, and alice has her browser remembered,
ends her other sessions and forgets the browser. Each step saves a screenshot
under target/browser/.
"""

import hashlib
import http.cookiejar
import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pyotp
import pytest
import zxingcpp
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

from conftest import SCREENSHOTS

PASSWORD = "correct horse battery staple"
shared = {}


def shot(driver, name):
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def main_text(driver):
    # A page that navigates between finding <main> and reading it (a script's reload after a
    # passkey ceremony) leaves a stale element: read the new page's instead.
    for _ in range(10):
        try:
            return driver.find_element(By.TAG_NAME, "main").text
        except StaleElementReferenceException:
            continue
    return driver.find_element(By.TAG_NAME, "main").text


def fill(driver, field_id, value):
    field = driver.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(value)


def press(driver, css, navigates=True):
    """Clicks; for a form's button, waits until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    if navigates:
        WebDriverWait(driver, 15).until(lambda _: gone(page))


def gone(element):
    """Whether an element's document was replaced (Chromium answers either error)."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error):
            return True
        raise


def at(driver, path):
    """The browser is on `path`, and no URL of the app ever carries a token or a code."""
    for _ in range(100):
        if urllib.parse.urlparse(driver.current_url).path == path:
            break
        time.sleep(0.05)
    url = urllib.parse.urlparse(driver.current_url)
    assert url.path == path, f"on {driver.current_url}, expected {path}: {main_text(driver)}"
    assert url.query == "" and url.fragment == "", driver.current_url


def sign_up(driver, stack, email, organization=""):
    driver.get(stack.base + "/signup")
    fill(driver, "email", email)
    fill(driver, "password", PASSWORD)
    fill(driver, "organization", organization)
    press(driver, "form[action='/signup'] button[type=submit]")


def log_in(driver, stack, email):
    driver.get(stack.base + "/login")
    fill(driver, "email", email)
    fill(driver, "password", PASSWORD)
    press(driver, "#log-in")


def log_out(driver):
    press(driver, "#log-out")
    at(driver, "/login")


def enroll_app(driver, name):
    """Adds an authenticator app from the QR code on the page, decoded from a screenshot by
    zxing-cpp, and returns its pyotp generator and the recovery codes the page shows."""
    press(driver, "#add-app")
    at(driver, "/factors/app")
    shot(driver, f"{name}-app-qr-code")
    png = driver.find_element(By.ID, "qr-code").screenshot_as_png
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, "one QR code on the page"
    uri = urllib.parse.urlparse(found[0].text)
    assert uri.scheme == "otpauth" and uri.netloc == "totp", found[0].text
    params = urllib.parse.parse_qs(uri.query)
    secret = params["secret"][0]
    # The grouped secret under "Can't scan the QR code?" is the same secret.
    press(driver, "#manual-entry summary", navigates=False)
    typed = driver.find_element(By.ID, "secret").text
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})+", typed), typed
    assert typed.replace(" ", "") == secret.upper()
    totp = pyotp.TOTP(
        secret,
        digits=int(params.get("digits", ["6"])[0]),
        interval=int(params.get("period", ["30"])[0]),
        digest={"SHA1": hashlib.sha1, "SHA256": hashlib.sha256}[
            params.get("algorithm", ["SHA1"])[0]
        ],
    )
    code_field = driver.find_element(By.ID, "code")
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    assert code_field.get_attribute("inputmode") == "numeric"
    code_field.send_keys(totp.now())
    press(driver, "#confirm")
    codes = recovery_codes(driver, name)
    press(driver, "#recovery-codes a")
    at(driver, "/account")
    return totp, codes


def recovery_codes(driver, name):
    """The recovery codes page: ten codes shown once, and the download gives the same."""
    codes = driver.find_element(By.ID, "codes").text.split()
    shot(driver, f"{name}-recovery-codes")
    assert len(codes) == 10, codes
    assert all(re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code) for code in codes), codes
    downloads = SCREENSHOTS / "downloads" / name
    downloads.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    press(driver, "#download-codes", navigates=False)
    saved = downloads / "tollgate-recovery-codes.txt"
    WebDriverWait(driver, 10).until(lambda _: saved.exists() and saved.stat().st_size > 0)
    assert saved.read_text().split() == codes
    saved.unlink()
    return codes


def later_code(totp):
    """A code of the next time step: the step the enrollment used is spent (no replay)."""
    return totp.at(time.time() + totp.interval)


def test_sign_up_enroll_an_app_and_log_in_with_a_code_then_a_recovery_code(chromium, stack):
    driver = chromium
    sign_up(driver, stack, "alice@example.com", organization="Acme")
    at(driver, "/account")
    assert "Signed in as alice@example.com with a password only." in main_text(driver)
    session = driver.get_cookie("tollgate_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    shot(driver, "1-alice-account-new")

    totp, codes = enroll_app(driver, "1-alice")
    factors = driver.find_element(By.ID, "factors").text
    assert "Authenticator app" in factors and "active" in factors
    assert "10 unused recovery codes left." in main_text(driver)
    log_out(driver)

    log_in(driver, stack, "alice@example.com")
    at(driver, "/login/verify")
    shot(driver, "1-alice-second-factor")
    fill(driver, "code", later_code(totp))
    press(driver, "#verify")
    at(driver, "/account")
    assert "alice@example.com with a second factor." in main_text(driver)
    last_used = driver.find_element(By.CSS_SELECTOR, "tr.factor td.last-used").text
    assert last_used != "never"
    shot(driver, "1-alice-logged-in-with-app")
    log_out(driver)

    log_in(driver, stack, "alice@example.com")
    at(driver, "/login/verify")
    press(driver, "#recovery summary", navigates=False)
    fill(driver, "recovery_code", codes[0].lower())
    press(driver, "#use-recovery-code")
    at(driver, "/account")
    assert "with a second factor." in main_text(driver)
    assert "9 unused recovery codes left." in main_text(driver)
    shot(driver, "1-alice-logged-in-with-recovery-code")
    log_out(driver)
    shared.update(alice_totp=totp, alice_codes=codes)


def test_mandatory_2fa_sends_a_member_without_a_factor_to_enrollment(chromium, stack):
    driver = chromium
    sign_up(driver, stack, "bob@example.com")
    at(driver, "/account")
    assert "None yet" in main_text(driver)
    log_out(driver)

    log_in(driver, stack, "alice@example.com")
    at(driver, "/login/verify")
    press(driver, "#recovery summary", navigates=False)
    fill(driver, "recovery_code", shared["alice_codes"][1])
    press(driver, "#use-recovery-code")
    at(driver, "/account")
    driver.find_element(By.LINK_TEXT, "Your organization").click()
    at(driver, "/org")
    fill(driver, "member-email", "bob@example.com")
    press(driver, "#add-member button")
    assert "bob@example.com is now a member." in main_text(driver)
    bob_row = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "tr.member")
               if "bob@example.com" in row.text]
    assert len(bob_row) == 1 and " off " in f" {bob_row[0]} ", bob_row

    # Mandatory 2FA, confirmed with the admin's password: a wrong one is refused.
    driver.find_element(By.ID, "mfa-required").click()
    fill(driver, "policy-password", "not the password at all")
    press(driver, "#save-policy")
    assert "The password is not right." in main_text(driver)
    assert not driver.find_element(By.ID, "mfa-required").is_selected()
    driver.find_element(By.ID, "mfa-required").click()
    fill(driver, "policy-password", PASSWORD)
    press(driver, "#save-policy")
    assert "Policy saved." in main_text(driver)
    assert driver.find_element(By.ID, "mfa-required").is_selected()
    kinds = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#audit td.kind")]
    assert "mfa_policy.updated" in kinds, kinds
    shot(driver, "2-alice-organization")
    log_out(driver)

    log_in(driver, stack, "bob@example.com")
    at(driver, "/enroll")
    assert "Your organization requires two-factor authentication." in main_text(driver)
    shot(driver, "2-bob-enrollment-required")
    # No session until a factor is enrolled: the account page sends him back to the login.
    driver.get(stack.base + "/account")
    at(driver, "/login")
    log_in(driver, stack, "bob@example.com")
    at(driver, "/enroll")
    totp, _codes = enroll_app(driver, "2-bob")
    # The enrollment's confirmation completed the login with the new factor.
    assert "Signed in as bob@example.com with a second factor." in main_text(driver)
    shot(driver, "2-bob-account-after-enrollment")
    log_out(driver)
    shared.update(bob_totp=totp)


def test_six_wrong_codes_show_the_lockout_and_when_to_retry(chromium, stack):
    driver = chromium
    totp = shared["bob_totp"]
    log_in(driver, stack, "bob@example.com")
    at(driver, "/login/verify")
    valid = {totp.at(time.time() + offset) for offset in (-60, -30, 0, 30, 60)}
    wrong = next(code for code in ("000000", "111111", "222222") if code not in valid)
    # Five free failures (login.free_failures), then the sixth starts a 30 s lockout, and
    # its answer says so.
    for attempt in range(1, 7):
        fill(driver, "code", wrong)
        press(driver, "#verify")
        at(driver, "/login/verify")
        message = driver.find_element(By.CSS_SELECTOR, "p.error").text
        if attempt < 6:
            assert message == "That code is not right. Check it and try again.", message
    assert re.fullmatch(
        r"That code is not right\. Too many failed attempts: try again in 3[01] seconds\.",
        message,
    ), message
    shot(driver, "3-bob-locked-out")
    # Locked: even a right code is refused until the lockout ends.
    fill(driver, "code", later_code(totp))
    press(driver, "#verify")
    at(driver, "/login/verify")
    message = driver.find_element(By.CSS_SELECTOR, "p.error").text
    assert re.fullmatch(r"Too many failed attempts\. Try again in \d+ seconds\.", message), message


def test_passkey_as_second_factor_then_passwordless(chromium, stack):
    driver = chromium
    options = VirtualAuthenticatorOptions()
    options.protocol = VirtualAuthenticatorOptions.Protocol.CTAP2
    options.transport = VirtualAuthenticatorOptions.Transport.INTERNAL
    options.has_resident_key = True
    options.has_user_verification = True
    options.is_user_verified = True
    options.is_user_consenting = True
    driver.add_virtual_authenticator(options)
    try:
        sign_up(driver, stack, "dave@example.com")
        at(driver, "/account")
        fill(driver, "passkey-label", "Laptop passkey")
        press(driver, "#add-passkey", navigates=False)
        recovery_codes(driver, "4-dave")
        credentials = driver.get_credentials()
        assert len(credentials) == 1 and credentials[0].is_resident_credential
        press(driver, "#recovery-codes a")
        at(driver, "/account")
        # The sign-up session has one factor now: a passkey raises it (VerifyStepUp).
        assert "with a password only." in main_text(driver)
        press(driver, "#step-up-passkey", navigates=False)
        WebDriverWait(driver, 15).until(
            lambda d: "with a second factor." in main_text(d)
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.factor")
        assert len(rows) == 1, [row.text for row in rows]
        assert "Passkey or security key (signs in alone)" in rows[0].text
        assert "Laptop passkey" in rows[0].text and "active" in rows[0].text
        shot(driver, "4-dave-account-with-passkey")
        log_out(driver)

        log_in(driver, stack, "dave@example.com")
        at(driver, "/login/verify")
        shot(driver, "4-dave-second-factor")
        press(driver, "#use-passkey", navigates=False)
        at(driver, "/account")
        assert "dave@example.com with a second factor." in main_text(driver)
        assert driver.find_element(By.CSS_SELECTOR, "tr.factor td.last-used").text != "never"
        log_out(driver)

        press(driver, "#passkey-login", navigates=False)
        at(driver, "/account")
        assert "dave@example.com with a second factor." in main_text(driver)
        shot(driver, "4-dave-passwordless")
        log_out(driver)
    finally:
        driver.remove_all_credentials()
        driver.remove_virtual_authenticator()



def test_a_remembered_browser_skips_the_code_until_it_is_forgotten(chromium, stack):
    driver = chromium
    codes = shared["alice_codes"]

    def second_factor(code, remember):
        at(driver, "/login/verify")
        press(driver, "#recovery summary", navigates=False)
        if remember:
            driver.find_element(By.ID, "remember-device-recovery").click()
        fill(driver, "recovery_code", code)
        press(driver, "#use-recovery-code")
        at(driver, "/account")

    # Alice's organization lets members' browsers be remembered for 30 days.
    log_in(driver, stack, "alice@example.com")
    second_factor(codes[2], remember=False)
    assert driver.get_cookie("tollgate_device") is None, "not asked to remember"
    driver.find_element(By.LINK_TEXT, "Your organization").click()
    at(driver, "/org")
    fill(driver, "trusted-device-days", "30")
    fill(driver, "policy-password", PASSWORD)
    press(driver, "#save-policy")
    assert "Policy saved." in main_text(driver)
    days = driver.find_element(By.ID, "trusted-device-days").get_attribute("value")
    assert days == "30", days
    log_out(driver)

    # Remember this browser: a persistent, HttpOnly cookie, and the device listed.
    log_in(driver, stack, "alice@example.com")
    second_factor(codes[3], remember=True)
    cookie = driver.get_cookie("tollgate_device")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
    assert cookie["expiry"] > time.time() + 29 * 86_400, cookie
    devices = driver.find_elements(By.CSS_SELECTOR, "#devices tr.device")
    assert len(devices) == 1, main_text(driver)
    shot(driver, "5-alice-remembered")
    log_out(driver)
    assert driver.get_cookie("tollgate_device") is not None, "kept across a logout"

    # The next login here skips the code; the session says how it was made.
    log_in(driver, stack, "alice@example.com")
    at(driver, "/account")
    assert "Signed in as alice@example.com on a remembered browser." in main_text(driver)
    rows = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#sessions tr.session")]
    assert any("this browser" in row for row in rows), rows
    # Not a step-up: changing factors still asks for a code.
    assert driver.find_elements(By.ID, "step-up"), "the step-up form is offered"

    # Another browser logs in too (a plain HTTP client through the same forms)...
    other = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )

    def form_post(path, fields):
        page = other.open(stack.base + path_before[path], timeout=10).read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode(dict(fields, csrf=token)).encode()
        with other.open(stack.base + path, data=body, timeout=10) as response:
            return response.geturl()

    path_before = {"/login": "/login", "/login/verify": "/login/verify"}
    landed = form_post("/login", {"email": "alice@example.com", "password": PASSWORD})
    assert landed.endswith("/login/verify"), landed
    landed = form_post("/login/verify", {"recovery_code": codes[4]})
    assert landed.endswith("/account"), landed
    # ...and "log out everywhere else" ends it, not this one.
    driver.get(stack.base + "/account")
    rows = driver.find_elements(By.CSS_SELECTOR, "#sessions tr.session")
    assert len(rows) == 2, main_text(driver)
    shot(driver, "5-alice-sessions")
    press(driver, "#log-out-elsewhere")
    assert "Signed out everywhere else (1 sessions ended)." in main_text(driver)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#sessions tr.session")) == 1
    with other.open(stack.base + "/account", timeout=10) as response:
        assert response.geturl().endswith("/login"), response.geturl()

    # Forgotten: the next login here asks for the second factor again.
    press(driver, "#devices .forget-device")
    assert "Browser forgotten" in main_text(driver)
    assert not driver.find_elements(By.CSS_SELECTOR, "#devices tr.device")
    log_out(driver)
    log_in(driver, stack, "alice@example.com")
    second_factor(codes[5], remember=False)
    log_out(driver)


def test_a_form_or_script_call_without_its_csrf_token_is_refused(chromium, stack):
    """A forged form (no cookie, or the browser's own cookies with another token) changes
    nothing; the script's calls are checked alike."""
    driver = chromium
    driver.get(stack.base + "/login")
    token = driver.find_element(By.CSS_SELECTOR, "meta[name=csrf]").get_attribute("content")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Stay)

    def post(path, body, headers):
        request = urllib.request.Request(stack.base + path, data=body, headers=headers)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.read().decode(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers

    form = {"email": "alice@example.com", "password": PASSWORD}
    for headers, csrf in (({}, "forged"), ({"Cookie": cookies}, "forged"),
                          ({"Cookie": cookies}, "")):
        body = urllib.parse.urlencode(dict(form, csrf=csrf)).encode()
        status, page, answer = post("/login", body, headers)
        assert status == 400 and "This form expired" in page, (headers, csrf, status)
        assert "tollgate_session" not in answer.get("set-cookie", "")
    # The same form with the page's token is let through (here: to the second factor).
    body = urllib.parse.urlencode(dict(form, csrf=token)).encode()
    status, _, answer = post("/login", body, {"Cookie": cookies})
    assert status == 303 and answer["location"] == "/login/verify", status

    json_headers = {"Cookie": cookies, "Content-Type": "application/json"}
    status, reply, _ = post("/login/passkey/begin", b'{"csrf": "forged"}', json_headers)
    assert status == 200 and json.loads(reply) == {
        "error": "This form expired. Please try again."
    }, reply
    body = json.dumps({"csrf": token}).encode()
    status, reply, _ = post("/login/passkey/begin", body, json_headers)
    assert "options" in json.loads(reply), reply


def test_no_secret_reaches_a_log(stack):
    logged = stack.logged()
    assert "VerifySecondFactor" in logged  # the calls are logged, so there is text to search
    for code in shared["alice_codes"]:
        assert code not in logged and code.lower() not in logged
    assert PASSWORD not in logged
    secret = shared["alice_totp"].secret
    assert secret not in logged
