//! The "bring your own HTML" workload (issue 13): HTML written elsewhere (a newsletter tool, a
//! marketing team's editor) passed through `template_data` to a template whose body is
//! `{{ body | safe }}` inside the layout. Generated here, deterministically, so that
//! `scripts/bench`, the text-part golden files and the micro-benchmark all see the same
//! document: about 20 KB with its own `<style>` block, nested `role="presentation"` layout
//! tables, a preheader hidden with `display:none`, one data table, lists, a blockquote, an
//! Outlook conditional comment, character references and about 30 links.

/// Name of the template the benchmark creates for this workload.
pub const BYO_TEMPLATE: &str = "byo_html";

/// `body.html` of [`BYO_TEMPLATE`]: the layout around the caller's HTML, unescaped.
pub const BYO_TEMPLATE_HTML: &str = "{% extends \"layout.html\" %}\n{% block title %}{{ subject }}{% endblock title %}\n{% block content %}{{ body | safe }}{% endblock content %}\n";

/// `subject.txt` of [`BYO_TEMPLATE`].
pub const BYO_TEMPLATE_SUBJECT: &str = "{{ subject }}\n";

/// `template.toml` of [`BYO_TEMPLATE`] (no `body.txt`: the text part is made from the HTML).
pub const BYO_TEMPLATE_TOML: &str = r#"name = "byo_html"
description = "HTML written elsewhere, sent inside the layout (the benchmark's bring-your-own-HTML workload)."
type = "marketing"
category = "newsletter"
locale = "en-US"
tags = ["bench"]

[[variables]]
name = "subject"
type = "string"
required = true
description = "The subject line"
example = "Spring at the shelters"

[[variables]]
name = "body"
type = "string"
required = true
description = "The email's HTML, written elsewhere; inserted unescaped"
example = "<p>Hello from the shelters.</p>"
"#;

/// Subject of the generated newsletter.
pub const BYO_SUBJECT: &str = "Spring at the shelters: eight friends looking for a home";

const ANIMALS: [(&str, &str, &str); 8] = [
    (
        "Pepper",
        "Border Collie mix",
        "A clever, bouncy girl who loves fetch & would thrive with an active family. She already knows sit, down and a very convincing \u{201c}please\u{201d}.",
    ),
    (
        "Luna",
        "Domestic Shorthair",
        "Shy for the first day, then a devoted lap cat. Happiest as the only pet, in a quiet home with a sunny windowsill.",
    ),
    (
        "Hazel & Juniper",
        "Netherland Dwarf rabbits",
        "A bonded pair who binky at breakfast time and must be adopted together. They share everything, even the last leaf of kale.",
    ),
    (
        "Otis",
        "Staffordshire Bull Terrier",
        "A gentle giant in a compact body: loves people, naps and long sniffy walks. Fine with older children, not with cats.",
    ),
    (
        "Clementine",
        "Maine Coon mix",
        "Fluffy, talkative and endlessly curious; gets on well with calm dogs and will supervise every meal you cook.",
    ),
    (
        "Scout",
        "Greyhound",
        "Retired from racing and ready for a sofa of her own. Walks nicely on a lead and sleeps eighteen hours a day.",
    ),
    (
        "Maple",
        "American guinea pig",
        "Squeaks with joy at the sound of a lettuce bag. Looking for a friend to share a roomy indoor hutch.",
    ),
    (
        "Ziggy",
        "Cockatiel",
        "Whistles the first bars of three songs and would love a home with someone around by day.",
    ),
];

fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// Escapes text for HTML (as the tool that wrote the newsletter would have).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The generated newsletter (about 20 KB), the value of `body` in the template data.
pub fn byo_newsletter_html() -> String {
    let site = "https://www.adoptdontshop.com";
    let mut h = String::with_capacity(24 * 1024);
    h.push_str(
        r#"<style type="text/css">
  .nl-wrap { background-color: #f6f3ee; }
  .nl-col { width: 100%; max-width: 560px; }
  .nl-kicker { font-size: 11px; line-height: 16px; letter-spacing: 1px; text-transform: uppercase; color: #8a7f72; }
  .nl-h1 { font-family: Georgia, 'Times New Roman', serif; font-size: 28px; line-height: 34px; color: #222222; margin: 0 0 12px 0; }
  .nl-lead { font-size: 17px; line-height: 26px; color: #333333; }
  .nl-card { background-color: #ffffff; border: 1px solid #e8e2d8; border-radius: 8px; }
  .nl-card-body { padding: 14px 18px; font-size: 15px; line-height: 22px; }
  .nl-name { font-size: 19px; line-height: 24px; font-weight: bold; color: #1d1d1d; text-decoration: none; }
  .nl-breed { font-size: 13px; color: #777777; }
  .nl-btn { display: inline-block; background-color: #d9480f; color: #ffffff !important; padding: 10px 18px; border-radius: 4px; font-weight: bold; text-decoration: none; }
  .nl-fees { width: 100%; border-collapse: collapse; margin: 0 0 16px 0; }
  .nl-fees th { text-align: left; font-size: 13px; border-bottom: 2px solid #ddd5c8; padding: 6px 8px; }
  .nl-fees td { font-size: 14px; border-bottom: 1px solid #eee8df; padding: 6px 8px; }
  .nl-quote { border-left: 3px solid #d9480f; margin: 0 0 16px 0; padding: 4px 0 4px 14px; color: #555555; font-style: italic; }
  .nl-social a { color: #8a7f72; text-decoration: none; }
  .nl-foot { font-size: 12px; line-height: 18px; color: #9a9186; }
  @media only screen and (max-width: 600px) {
    .nl-col { width: 100% !important; }
    .nl-stack { display: block !important; width: 100% !important; padding: 0 !important; }
    .nl-h1 { font-size: 24px !important; line-height: 30px !important; }
  }
</style>
<!--[if mso]><style type="text/css">.nl-btn { padding: 0 !important; }</style><![endif]-->
<div class="nl-preheader" style="display:none; max-height:0; overflow:hidden; mso-hide:all; font-size:1px; color:#f6f3ee;">Eight animals hoping this is their spring, one very happy ending, and this season&rsquo;s adoption fees.&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;</div>
<table role="presentation" class="nl-wrap" width="100%" cellpadding="0" cellspacing="0" border="0">
  <tr>
    <td align="center" style="padding: 0 8px;">
      <table role="presentation" class="nl-col" width="100%" cellpadding="0" cellspacing="0" border="0">
        <tr>
          <td class="nl-kicker" style="padding: 4px 0 10px 0;">Spring newsletter &middot; Issue 14 &middot; <a href="https://www.adoptdontshop.com/newsletter/spring-2026?view=browser">View in your browser</a></td>
        </tr>
        <tr>
          <td>
            <h1 class="nl-h1">Spring at the shelters</h1>
            <p class="nl-lead">Hi friends,</p>
            <p class="nl-lead">Spring is here, and so are lots of wonderful animals hoping this is the season they find their family. Our partner rescues took in <strong>214 animals</strong> in March alone &mdash; here are eight who&rsquo;ve caught our eye. Every adoption through <a href="https://www.adoptdontshop.com/spring">our spring campaign</a> frees a kennel for the next animal in need.</p>
          </td>
        </tr>
"#,
    );
    for (i, (name, breed, blurb)) in ANIMALS.iter().enumerate() {
        let id = format!("{}-{}", slug(name), 1041 + i);
        let page = format!("{site}/pets/{id}");
        let tracked = format!(
            "{page}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=spring-2026"
        );
        h.push_str(&format!(
            r##"        <tr>
          <td style="padding: 0 0 16px 0;">
            <table role="presentation" class="nl-card" width="100%" cellpadding="0" cellspacing="0" border="0">
              <tr>
                <td class="nl-stack" width="160" valign="top" style="width:160px; padding: 14px 0 14px 14px;">
                  <a href="{tracked}"><img src="https://images.adoptdontshop.com/pets/{id}.jpg" width="160" alt="Photo of {name_e}" style="width:160px; max-width:160px; border-radius:6px;"></a>
                </td>
                <td class="nl-stack nl-card-body" valign="top">
                  <a class="nl-name" href="{tracked}">{name_e}</a><br>
                  <span class="nl-breed">{breed_e} &middot; {age} &middot; at {rescue}</span>
                  <p style="margin: 8px 0 12px 0;">{blurb_e}</p>
                  <table role="presentation" cellpadding="0" cellspacing="0" border="0">
                    <tr><td class="nl-btn-cell" bgcolor="#d9480f" style="border-radius:4px;"><a class="nl-btn" href="{tracked}">Meet {name_e}</a></td></tr>
                  </table>
                </td>
              </tr>
            </table>
          </td>
        </tr>
"##,
            name_e = esc(name),
            breed_e = esc(breed),
            blurb_e = esc(blurb)
                .replace('\u{201c}', "&ldquo;")
                .replace('\u{201d}', "&rdquo;"),
            age = match i % 4 {
                0 => "1 year".to_string(),
                n => format!("{} years", n + 1),
            },
            rescue = [
                "Riverside Animal Haven",
                "Whiskers &amp; Friends",
                "Hop Home Rabbit Rescue",
                "Happy Tails Rescue"
            ][i % 4],
        ));
    }
    h.push_str(
        r#"        <tr>
          <td style="padding: 8px 0 0 0;">
            <h2 style="font-size:20px; margin: 8px 0;">A happy ending: Biscuit&rsquo;s new life</h2>
            <p>When Biscuit arrived at Happy Tails Rescue he was nervous of everything, from doorbells to dustpans. Six weeks after moving in with Maya and her partner, he has a favourite hiking trail, a best friend at the dog park and a very firm opinion about the sofa.</p>
            <blockquote class="nl-quote">&ldquo;We couldn&rsquo;t imagine life without him now. Thank you, Happy Tails, for trusting us with him.&rdquo;<br>&mdash; Maya, Bristol</blockquote>
            <p><a href="https://www.adoptdontshop.com/stories/biscuits-new-life">Read Biscuit&rsquo;s full story</a></p>
            <h2 style="font-size:20px; margin: 8px 0;">Adoption fees this spring</h2>
            <table class="nl-fees" cellpadding="0" cellspacing="0">
              <thead>
                <tr><th>Animal</th><th>Fee</th><th>What it covers</th></tr>
              </thead>
              <tbody>
                <tr><td>Dogs</td><td>&pound;175</td><td>Vaccinations, microchip, neutering, four weeks of insurance</td></tr>
                <tr><td>Cats</td><td>&pound;95</td><td>Vaccinations, microchip, neutering</td></tr>
                <tr><td>Rabbits (pair)</td><td>&pound;80</td><td>Vaccinations, neutering, a health check</td></tr>
                <tr><td>Small pets &amp; birds</td><td>&pound;20&ndash;40</td><td>A health check and starter food</td></tr>
              </tbody>
            </table>
            <h2 style="font-size:20px; margin: 8px 0;">How adoption works</h2>
            <ol>
              <li>Find an animal you&rsquo;d like to meet on <a href="https://www.adoptdontshop.com/pets">our search page</a>.</li>
              <li>Send an application: it takes about ten minutes, and you can save it and come back.</li>
              <li>The rescue calls you, then visits your home (most visits take under an hour).</li>
              <li>Meet your new friend, sign the adoption contract and take them home.</li>
            </ol>
            <h2 style="font-size:20px; margin: 8px 0;">Coming up</h2>
            <ul>
              <li><strong>12 April</strong>, Bristol: <a href="https://www.adoptdontshop.com/events/bristol-open-day">open day at Riverside Animal Haven</a>, 10am&ndash;3pm</li>
              <li><strong>19 April</strong>, online: <a href="https://www.adoptdontshop.com/events/rabbit-care-webinar">rabbit care webinar</a> with Hop Home&rsquo;s vet nurse</li>
              <li><strong>3 May</strong>, Leeds: <a href="https://www.adoptdontshop.com/events/sponsored-walk">the great sponsored dog walk</a> (5 km, all dogs welcome)</li>
            </ul>
            <p>Can&rsquo;t adopt right now? Fostering, volunteering and donations all help. Volunteers walk dogs, socialise shy cats, drive animals to vet appointments and help at events; every hour makes a difference to an animal waiting for its family. Apply here:<br><a href="https://www.adoptdontshop.com/volunteer/apply?source=newsletter-spring-2026&amp;ref=body">https://www.adoptdontshop.com/volunteer/apply?source=newsletter-spring-2026&amp;ref=body</a></p>
            <p>Or <a href="https://www.adoptdontshop.com/donate?campaign=spring-2026">make a donation</a>: &pound;10 feeds a cat for a month, &pound;25 pays for a dog&rsquo;s vaccinations.</p>
          </td>
        </tr>
        <tr>
          <td class="nl-social" align="center" style="padding: 16px 0;">
            <table role="presentation" cellpadding="0" cellspacing="0" border="0">
              <tr>
                <td style="padding: 0 6px;"><a href="https://www.facebook.com/adoptdontshop">Facebook</a></td>
                <td style="padding: 0 6px;"><a href="https://www.instagram.com/adoptdontshop">Instagram</a></td>
                <td style="padding: 0 6px;"><a href="https://www.tiktok.com/@adoptdontshop">TikTok</a></td>
                <td style="padding: 0 6px;"><a href="https://www.youtube.com/@adoptdontshop">YouTube</a></td>
              </tr>
            </table>
          </td>
        </tr>
        <tr>
          <td class="nl-foot" align="center">
            Adopt Don&rsquo;t Shop &middot; 12 Harbour Road<br>Bristol BS1 5TY<br>
            You&rsquo;re receiving this because you signed up at <a href="https://www.adoptdontshop.com">www.adoptdontshop.com</a>.
            Questions? <a href="mailto:hello@adoptdontshop.com">hello@adoptdontshop.com</a>
          </td>
        </tr>
      </table>
    </td>
  </tr>
</table>
"#,
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_newsletter_has_the_issues_shape() {
        let h = byo_newsletter_html();
        assert!((18_000..=24_000).contains(&h.len()), "{} bytes", h.len());
        let links = h.matches("<a ").count();
        assert!((28..=40).contains(&links), "{links} links");
        assert_eq!(
            h.matches("<style").count(),
            2,
            "a <style> and one in an MSO comment"
        );
        assert!(h.contains("role=\"presentation\""));
        assert!(h.contains("display:none"));
    }
}
