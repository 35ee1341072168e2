// The few lines of script the pages need: WebAuthn, which has no HTML form, and the download
// of the recovery codes. Each call to the app sends the page's CSRF token; the tokens
// themselves stay in HttpOnly cookies that this script cannot read.
'use strict';

const csrf = () => document.querySelector('meta[name=csrf]').content;

function showError(text) {
  const box = document.querySelector('.script-error');
  box.textContent = text;
  box.hidden = false;
}

async function call(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({ csrf: csrf(), ...body }),
  });
  if (!response.ok) throw new Error('The server answered ' + response.status + '.');
  return response.json();
}

// What the app's reply says to do next.
function follow(reply) {
  if (reply.error) {
    showError(reply.error);
  } else if (reply.redirect) {
    window.location.assign(reply.redirect);
  } else if (reply.html) {
    document.querySelector('main').innerHTML = reply.html;
    wire();
  }
}

// One WebAuthn ceremony: the app begins it with Tollgate and returns the options, the browser
// runs it (`run`), and the app finishes it with Tollgate.
async function ceremony(button, fields, run) {
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) {
    showError('This browser does not support passkeys.');
    return;
  }
  button.disabled = true;
  try {
    const begun = await call(button.dataset.begin, fields);
    if (!begun.options) {
      follow(begun);
      return;
    }
    const credential = await run(JSON.parse(begun.options));
    follow(await call(button.dataset.finish, {
      ...fields,
      ceremony: begun.ceremony || '',
      response: JSON.stringify(credential.toJSON()),
    }));
  } catch (error) {
    showError(error.name === 'NotAllowedError'
      ? 'The passkey request was cancelled or timed out.'
      : String(error.message || error));
  } finally {
    button.disabled = false;
  }
}

const register = (options) => navigator.credentials.create({
  publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
});
const assert = (options) => navigator.credentials.get({
  publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
});

function wire() {
  const add = document.getElementById('add-passkey');
  if (add) {
    add.onclick = () => ceremony(add, {
      label: document.getElementById('passkey-label').value,
      discoverable: document.getElementById('passkey-discoverable').checked,
    }, register);
  }
  for (const id of ['use-passkey', 'passkey-login', 'step-up-passkey']) {
    const button = document.getElementById(id);
    if (button) button.onclick = () => ceremony(button, {}, assert);
  }
  const download = document.getElementById('download-codes');
  if (download) {
    download.onclick = () => {
      const text = document.getElementById('codes').textContent;
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      link.download = 'tollgate-recovery-codes.txt';
      link.click();
      URL.revokeObjectURL(link.href);
    };
  }
}

wire();
