// The review station's page: runs, answers, one image at a time, a reviewer's label.
// Every name and label is written as text (textContent), never as HTML; nothing is inline.
'use strict';

const state = {run: null, answers: [], index: -1};
const $ = (id) => document.getElementById(id);

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function percent(value) {
  return value === null || value === undefined ? '–' : (100 * value).toFixed(1) + ' %';
}

const SECOND_LOOK = 'second look';

// Flagged first: those a reviewer flagged for a second look, then those the model flagged.
function flagRank(answer) {
  if (answer.reviewed_label === SECOND_LOOK) return 2;
  return answer.review === true ? 1 : 0;
}

function ordered(answers) {
  const byMalignant = (a, b) => b.malignant_probability - a.malignant_probability;
  if ($('order').value === 'malignant') return answers.slice().sort(byMalignant);
  return answers.slice().sort((a, b) => flagRank(b) - flagRank(a) || byMalignant(a, b));
}

function listItem(answer, index) {
  const item = document.createElement('li');
  item.dataset.index = index;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = answer.file;
  const call = document.createElement('span');
  call.className = 'call';
  call.textContent = answer.decision + ' ' + percent(answer.malignant_probability);
  item.append(name, call);
  const note = document.createElement('span');
  if (answer.reviewed_label === SECOND_LOOK) {
    note.className = 'flag';
    note.textContent = `second look asked by ${answer.reviewer}`;
  } else if (answer.reviewed_label) {
    note.className = 'done';
    note.textContent = 'reviewed: ' + answer.reviewed_label;
  } else if (answer.review) {
    note.className = 'flag';
    note.textContent = 'flagged: ' + answer.review_reason;
  }
  item.append(note);
  item.addEventListener('click', () => show(index));
  return item;
}

function render() {
  const list = $('answers');
  list.replaceChildren(...state.answers.map(listItem));
  const reviewed = state.answers.filter(
    (answer) => answer.reviewed_label && answer.reviewed_label !== SECOND_LOOK).length;
  $('progress').textContent = state.answers.length ? `${reviewed} of ${state.answers.length} reviewed` : '';
  if (state.index >= 0) show(state.index);
}

function show(index) {
  if (!state.answers.length) return;
  state.index = Math.max(0, Math.min(index, state.answers.length - 1));
  const answer = state.answers[state.index];
  for (const item of $('answers').children) {
    item.classList.toggle('current', Number(item.dataset.index) === state.index);
  }
  $('answers').children[state.index].scrollIntoView({block: 'nearest'});
  $('empty').hidden = true;
  $('figure').hidden = $('facts').hidden = $('labels').hidden = false;
  $('image').src = `/api/runs/${encodeURIComponent(state.run)}/image?file=${encodeURIComponent(answer.file)}`;
  $('image').alt = answer.file;
  $('overlay').hidden = false;
  $('overlay').src = `/api/runs/${encodeURIComponent(state.run)}/explanation?file=${encodeURIComponent(answer.file)}`;
  $('overlay').alt = `Grad-CAM of ${answer.file}: where the model looked`;
  $('file').textContent = answer.file;
  $('decision').textContent = `${answer.decision} (malignant when its probability reaches ${percent(answer.malignant_threshold)})`;
  $('most-probable').textContent = `${answer.most_probable_class}, ${percent(answer.most_probable_probability)}`;
  $('malignant').textContent = percent(answer.malignant_probability);
  $('flag').textContent = answer.review ? `a person should look first: ${answer.review_reason}` : 'not flagged';
  if (answer.model_version) {
    const card = document.createElement('a');
    card.href = `/model-cards/${encodeURIComponent(answer.model_version)}`;
    card.target = '_blank';
    card.rel = 'noopener';
    card.textContent = 'model card';
    $('model').replaceChildren(`version ${answer.model_version} (`, card, ')');
  } else {
    $('model').textContent = 'unknown version';
  }
  $('reviewed').textContent = answer.reviewed_label
    ? `${answer.reviewed_label} by ${answer.reviewer}, ${answer.reviewed_at}` : 'not yet';
}

async function label(value) {
  const answer = state.answers[state.index];
  const reviewer = $('reviewer').value.trim();
  if (!answer) return;
  if (!reviewer) {
    $('message').textContent = 'Type your name first: each review is kept with who gave it.';
    $('reviewer').focus();
    return;
  }
  try {
    const saved = await getJson(`/api/runs/${encodeURIComponent(state.run)}/reviews`, {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({file: answer.file, label: value, reviewer: reviewer})});
    Object.assign(answer, saved);
    $('message').textContent = `${answer.file}: ${saved.reviewed_label} recorded.`;
    render();
    show(state.index + 1);
  } catch (error) {
    $('message').textContent = `Not recorded: ${error.message}`;
  }
}

function pngUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (character) => character.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], {type: 'image/png'}));
}

async function classify(file) {
  const item = document.createElement('li');
  const title = document.createElement('strong');
  title.textContent = file.name;
  const text = document.createElement('span');
  text.textContent = ' classifying…';
  item.append(title, text);
  $('uploaded').prepend(item);
  $('uploads').hidden = false;
  try {
    const answer = await getJson('/api/classify', {method: 'POST', body: file,
      headers: {'Content-Type': 'application/octet-stream'}});
    text.textContent = ` ${answer.decision}; most probable ${answer.most_probable_class} ` +
      `${percent(answer.most_probable_probability)}; malignant ${percent(answer.malignant_probability)} ` +
      `(threshold ${percent(answer.malignant_threshold)}); ` +
      (answer.review ? `a person should look first: ${answer.review_reason}` : 'not flagged');
    for (const [data, alt] of [[answer.picture, file.name], [answer.overlay, `Grad-CAM of ${file.name}`]]) {
      const image = document.createElement('img');
      image.src = pngUrl(data);
      image.alt = alt;
      item.append(image);
    }
  } catch (error) {
    text.textContent = ` not classified: ${error.message}`;
  }
}

async function openRun(name) {
  state.run = name;
  state.answers = ordered(await getJson(`/api/runs/${encodeURIComponent(name)}/answers`));
  state.index = state.answers.length ? 0 : -1;
  render();
}

async function start() {
  $('reviewer').value = localStorage.getItem('reviewer') || '';
  $('reviewer').addEventListener('change', () => localStorage.setItem('reviewer', $('reviewer').value.trim()));
  $('run').addEventListener('change', () => openRun($('run').value));
  $('overlay').addEventListener('error', () => { $('overlay').hidden = true; });
  $('upload').addEventListener('change', () => { for (const file of $('upload').files) classify(file); });
  document.addEventListener('dragover', (event) => event.preventDefault());
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    for (const file of event.dataTransfer.files) classify(file);
  });
  $('order').addEventListener('change', () => { state.answers = ordered(state.answers); state.index = 0; render(); });
  for (const button of document.querySelectorAll('#labels button')) {
    button.addEventListener('click', () => label(button.dataset.label));
  }
  document.addEventListener('keydown', (event) => {
    if (event.target.tagName === 'INPUT' || event.target.tagName === 'SELECT') return;
    const keys = {'1': 'benign', '2': 'malignant', '3': 'normal', '0': 'not usable', 'f': SECOND_LOOK};
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === 'j') show(state.index + 1);
    else if (event.key === 'k') show(state.index - 1);
    else if (keys[event.key]) label(keys[event.key]);
    else return;
    // Handled: the key is not also typed into the name field that label() may focus.
    event.preventDefault();
  });
  // The runs last: every control above works while they load (an image chosen at once is
  // classified).
  const runs = await getJson('/api/runs');
  $('run').replaceChildren(...runs.map((run) => {
    const option = document.createElement('option');
    option.value = run.run;
    option.textContent = `${run.run} (${run.images} images, version ${run.model_version})`;
    return option;
  }));
  if (runs.length) await openRun(runs[0].run);
}

document.addEventListener('DOMContentLoaded', () => start().catch((error) => {
  $('message').textContent = `The page could not load its runs: ${error.message}`;
}));
