// The decoder interface answered by the server's predict endpoint (used when the in-browser decoder,
// decoder.js, is missing). feedback[i]: what to pass back as maskInput to refine masks[i].
import { api } from './api.js';
import { decodeRle } from './rle.js';

export function createServerDecoder(projectId) {
  return {
    kind: 'server',
    async decode(imageId, points, labels, box, maskInput, { multimask = true } = {}) {
      const body = { multimask };
      if (points && points.length) { body.points = points; body.labels = labels; }
      if (box) body.box = box;
      if (maskInput) body.mask_input = maskInput;
      const r = await api('POST', `/api/projects/${projectId}/images/${imageId}/predict`, body);
      return {
        masks: r.masks.map((m) => decodeRle(m.rle)),
        scores: r.masks.map((m) => m.score),
        lowRes: null,
        feedback: r.masks.map((m) => ({ prediction_id: r.prediction_id, index: m.index })),
      };
    },
  };
}
