// Review pages: record a prompt in the browser. Press Record, read, Stop, Listen, then Keep
// (sent to the server, which checks length and level and converts it for the phone line)
// or Record again. Nothing leaves the browser until Keep. Without a microphone API the
// recorder stays hidden and the upload form is the way.
(function () {
  'use strict';

  // Above 48 kHz, average neighbouring samples down (the server makes 8 kHz of it anyway):
  // a minute stays well under the upload limit.
  function downsample(chunks, rate) {
    const k = Math.ceil(rate / 48000);
    if (k <= 1) return { chunks: chunks, rate: rate };
    let n = 0;
    chunks.forEach(function (c) { n += c.length; });
    const all = new Float32Array(n);
    let at = 0;
    chunks.forEach(function (c) { all.set(c, at); at += c.length; });
    const out = new Float32Array(Math.floor(n / k));
    for (let i = 0; i < out.length; i++) {
      let sum = 0;
      for (let j = 0; j < k; j++) sum += all[i * k + j];
      out[i] = sum / k;
    }
    return { chunks: [out], rate: Math.round(rate / k) };
  }

  function wavFile(rawChunks, rawRate) {
    const d = downsample(rawChunks, rawRate);
    const chunks = d.chunks, rate = d.rate;
    let n = 0;
    chunks.forEach(function (c) { n += c.length; });
    const buf = new ArrayBuffer(44 + n * 2);
    const v = new DataView(buf);
    function text(at, s) { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); }
    text(0, 'RIFF'); v.setUint32(4, 36 + n * 2, true); text(8, 'WAVE');
    text(12, 'fmt '); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true);
    v.setUint16(34, 16, true); text(36, 'data'); v.setUint32(40, n * 2, true);
    let at = 44;
    chunks.forEach(function (c) {
      for (let i = 0; i < c.length; i++, at += 2) {
        const s = Math.max(-1, Math.min(1, c[i]));
        v.setInt16(at, s < 0 ? s * 32768 : s * 32767, true);
      }
    });
    return new Blob([buf], { type: 'audio/wav' });
  }

  function setup(box) {
    const btn = function (name) { return box.querySelector('[data-act="' + name + '"]'); };
    const status = box.querySelector('.rec-status');
    const meter = box.querySelector('meter');
    const maxSeconds = Number(box.dataset.maxSeconds) || 60;
    let ctx = null, stream = null, chunks = [], rate = 48000, take = null, timer = null, started = 0;

    function say(message, refused) {
      status.textContent = message;
      status.classList.toggle('refused', Boolean(refused));
    }
    function buttons(state) {
      btn('record').disabled = state !== 'idle';
      btn('stop').disabled = state !== 'recording';
      ['listen', 'keep', 'redo'].forEach(function (b) { btn(b).disabled = state !== 'recorded'; });
    }
    function seconds() {
      let n = 0;
      chunks.forEach(function (c) { n += c.length; });
      return n / rate;
    }

    async function record() {
      say('');
      buttons('busy');
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false } });
      } catch (e) {
        say('The microphone could not be opened (' + e.name + '). Allow the microphone for this ' +
            'site, or upload a file instead.', true);
        buttons('idle');
        return;
      }
      try {
        ctx = new AudioContext();
        rate = ctx.sampleRate;
        await ctx.audioWorklet.addModule(box.dataset.worklet);
        const source = ctx.createMediaStreamSource(stream);
        const node = new AudioWorkletNode(ctx, 'pr-capture');
        const silent = ctx.createGain();
        silent.gain.value = 0;  // the worklet must be pulled, but nothing is played back
        chunks = [];
        node.port.onmessage = function (ev) {
          chunks.push(ev.data);
          let peak = 0;
          for (let i = 0; i < ev.data.length; i++) peak = Math.max(peak, Math.abs(ev.data[i]));
          meter.value = peak;
        };
        source.connect(node);
        node.connect(silent);
        silent.connect(ctx.destination);
      } catch (e) {
        stream.getTracks().forEach(function (t) { t.stop(); });
        if (ctx) ctx.close();
        stream = ctx = null;
        say('This browser could not record (' + e.message + '). Upload a file instead.', true);
        buttons('idle');
        return;
      }
      started = Date.now();
      buttons('recording');
      say('Recording: read the text now, then press Stop.');
      timer = setInterval(function () {
        const s = (Date.now() - started) / 1000;
        if (s >= maxSeconds) { stop(); } else { say('Recording: ' + s.toFixed(0) + ' s'); }
      }, 250);
    }

    async function stop() {
      clearInterval(timer);
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      if (ctx) await ctx.close();
      stream = ctx = null;
      meter.value = 0;
      take = wavFile(chunks, rate);
      buttons('recorded');
      say('Recorded ' + seconds().toFixed(1) + ' s. Listen, then keep it or record again.');
    }

    function listen() {
      const player = new AudioContext();
      const all = new Float32Array(Math.max(1, Math.round(seconds() * rate)));
      let at = 0;
      chunks.forEach(function (c) { all.set(c, at); at += c.length; });
      const buffer = player.createBuffer(1, all.length, rate);
      buffer.copyToChannel(all, 0);
      const src = player.createBufferSource();
      src.buffer = buffer;
      src.connect(player.destination);
      src.onended = function () { player.close(); };
      src.start();
    }

    async function keep() {
      buttons('busy');
      say('Sending…');
      const form = new FormData();
      form.append('csrf_token', box.dataset.csrf);
      form.append('version', box.dataset.version);
      form.append('source', 'browser');
      form.append('audio', take, 'take.wav');
      let response, data = {};
      try {
        response = await fetch(box.dataset.url, {
          method: 'POST', body: form, credentials: 'same-origin',
          headers: { 'Accept': 'application/json', 'X-CSRF-Token': box.dataset.csrf }
        });
        data = await response.json();
      } catch (e) {
        say('The recording could not be sent (' + e.message + '). Try again.', true);
        buttons('recorded');
        return;
      }
      if (response.ok) {
        say(data.message);
        window.location.reload();
      } else {
        say('Not kept: ' + (data.error || response.statusText), true);
        buttons('recorded');
      }
    }

    function redo() { take = null; chunks = []; buttons('idle'); say(''); }

    if (!navigator.mediaDevices || !window.AudioWorkletNode) return;  // upload form only
    box.hidden = false;
    btn('record').addEventListener('click', record);
    btn('stop').addEventListener('click', stop);
    btn('listen').addEventListener('click', listen);
    btn('keep').addEventListener('click', keep);
    btn('redo').addEventListener('click', redo);
    buttons('idle');
  }

  document.querySelectorAll('.recorder').forEach(setup);
}());
