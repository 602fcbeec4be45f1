#!/usr/bin/env node
'use strict';
// The S3 double the tests run: s3rver (pinned in package.json), with its PUT made the way
// S3's is. S3 answers a PUT once the object is stored and replaces an object at once;
// s3rver 3.7.1 writes the object's file in place and may answer before its last bytes are
// written, so a GET during a PUT gets part of the object (an empty one at first) with a
// matching Content-Length. Here a PUT writes a file beside the object, waits until it is
// written, stores the metadata, then renames it over the object. Left: a GET between the
// metadata and the rename of a replaced object gets the new metadata with the old bytes
// (thumbgate's MD5 check finds that: tests/check_s3.c test_s3_damaged_objects_are_not_kept).
const crypto = require('crypto');
const fs = require('fs-extra');
const path = require('path');
const FilesystemStore = require('s3rver/lib/stores/filesystem');

let seq = 0;
FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  const part = `${objectPath}.part-${seq++}`; // not listed: keys end in ._S3rver_object
  await fs.mkdirp(path.dirname(objectPath));
  const md5 = crypto.createHash('md5');
  let size = 0;
  await new Promise((resolve, reject) => {
    const out = fs.createWriteStream(part).on('error', reject).on('close', resolve);
    if (Buffer.isBuffer(object.content)) {
      md5.update(object.content);
      size = object.content.length;
      out.end(object.content);
      return;
    }
    object.content
      .on('error', reject)
      .on('data', chunk => {
        md5.update(chunk);
        size += chunk.length;
      })
      .pipe(out);
  });
  const digest = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, digest);
  await fs.rename(part, objectPath);
  return { size, md5: digest };
};

require('s3rver/bin/s3rver.js');
